// A small web phone for the gateway: logs in to an XMPP server over websocket (stanza), calls a
// JID with Jingle audio (XEP-0166/0167/0176/0320: stanza's MediaSession, a plain
// RTCPeerConnection; a full JID gets a session-initiate, a bare JID a XEP-0353 propose first),
// answers calls announced with Jingle Message Initiation (propose -> ringing -> proceed, then the
// caller's session-initiate) or by a direct session-initiate, and shows the loudest frequency it
// hears (WebAudio AnalyserNode on the remote track).
//
// A person uses the form. URL parameters fill it in and drive it (integration/tests/
// browser_harness.py does this):
//   ws, jid, password, callee   the form's fields
//   login=1                     log in at once
//   call=1                      with login=1: call `callee` once logged in
//   answer=auto                 answer every incoming call at once
//   candidates=loopback         offer only 127.0.0.1 ICE candidates
//   report=/path                POST every event as JSON to this URL (in order)
//   control=/path               poll this URL for commands: [{seq, cmd: call|hangup|answer|
//                               reject|logout|dtmf, to?, reason?, tones?}] (GET ?after=<last seq>)
// Every event is also logged on the console as `XSG_PHONE {"type": ..., ...}`.
import * as XMPP from 'stanza';

const NS_JMI = 'urn:xmpp:jingle-message:0';
const NS_RTP = 'urn:xmpp:jingle:apps:rtp:1';
const JMI_ACTIONS = ['propose', 'ringing', 'proceed', 'reject', 'retract', 'accept', 'finish'];

const $ = id => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const field of ['ws', 'jid', 'password', 'callee']) {
  if (params.has(field)) $(field).value = params.get(field);
}
if (!$('ws').value) {
  $('ws').value = `ws://${location.hostname || '127.0.0.1'}:5280/xmpp-websocket`;
}

let client = null;
let session = null;     // the current Jingle MediaSession
let incoming = null;    // {from, id}: a JMI propose not answered yet, or {session}: a direct initiate
let proposing = null;   // {to, id, stream}: our JMI propose, waiting for <proceed/>
let jmiCall = null;     // {peer, id} of the call set up through JMI (for <finish/>)
let analysis = null;    // {ctx, timer}

// ------------------------------------------------------------------ events: screen, console, report

const reportUrl = params.get('report');
let reportChain = Promise.resolve();
let seq = 0;

function emit(type, data = {}) {
  const event = { type, seq: ++seq, t: Math.round(performance.now()), ...data };
  const line = JSON.stringify(event);
  console.log('XSG_PHONE ' + line);
  if (!['heard', 'xml', 'stats'].includes(type)) log(type + ' ' + JSON.stringify(data));
  if (reportUrl) {
    // one request after the other, so that the events arrive in order
    reportChain = reportChain.then(() => fetch(reportUrl, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: line,
    })).catch(() => {});
  }
}

function log(text) {
  const el = $('log');
  el.textContent += new Date().toISOString().slice(11, 23) + ' ' + text + '\n';
  el.scrollTop = el.scrollHeight;
}

function status(text) {
  $('status').textContent = text;
}

function updateButtons() {
  const online = !!(client && client.sessionStarted);
  $('login').disabled = !!client;
  $('logout').disabled = !client;
  $('call').disabled = !online || !!session || !!proposing;
  $('hangup').disabled = !session && !jmiCall && !proposing;
  $('send-tones').disabled = !session;
  $('incoming').hidden = !incoming;
}

// ------------------------------------------------------------------ login

function login() {
  if (client) return;
  const jid = $('jid').value.trim();
  const c = client = XMPP.createClient({
    jid,
    password: $('password').value,
    // an explicit URL: no XEP-0156 discovery (that would fetch https://<domain>/.well-known/…)
    transports: { websocket: $('ws').value.trim(), bosh: false },
    // stanza's default is a public STUN server; the gateway and the tests are local
    jingle: { iceServers: [] },
  });
  // JMI (XEP-0353) is not in stanza 12: teach its parser the elements, as message.jmi
  const { attribute, childAttribute } = XMPP.JXT;
  client.stanzas.define(JMI_ACTIONS.map(type => ({
    element: type, namespace: NS_JMI, path: 'message.jmi', type, typeField: 'type',
    fields: { id: attribute('id'), media: childAttribute(NS_RTP, 'description', 'media') },
  })));
  client.stanzas.define({ aliases: ['message.jmi.reason'], element: 'reason',
                          namespace: XMPP.Namespaces.NS_JINGLE_1 });

  client.on('session:started', () => {
    c.sendPresence();   // available: messages to the bare JID (JMI propose) reach us
    status('Logged in as ' + c.jid);
    emit('logged-in', { jid: c.jid });
    updateButtons();
    const callee = params.get('callee');
    if (params.get('login') === '1' && callee && params.get('call') === '1') call(callee);
  });
  client.on('auth:failed', () => {
    status('Login failed');
    emit('auth-failed');
    c.disconnect();
  });
  client.on('stream:error', e => emit('stream-error', { condition: e.condition, text: e.text }));
  client.on('disconnected', () => {
    emit('disconnected');
    if (client !== c) return;     // an earlier client, logged out
    client = null;
    if ($('status').textContent !== 'Login failed') status('Disconnected');
    updateButtons();
  });
  // the Jingle and JMI traffic, verbatim (the tests print it when they fail)
  for (const dir of ['incoming', 'outgoing']) {
    client.on('raw:' + dir, xml => {
      if (xml.includes('urn:xmpp:jingle')) emit('xml', { dir, xml });
    });
  }
  client.on('message', onMessage);
  client.on('jingle:outgoing', s => emit('outgoing', { sid: s.sid, peer: s.peerID }));
  client.on('jingle:incoming', onIncomingSession);
  client.on('jingle:ringing', s => { status('Ringing…'); emit('ringing', { sid: s.sid }); });
  client.on('jingle:accepted', s => { status('In call with ' + s.peerID); emit('accepted', { sid: s.sid }); });
  client.on('jingle:terminated', (s, reason) => onTerminated(s, reason));
  client.jingle.on('peerTrackAdded', (s, track, stream) => onRemoteTrack(s, track, stream));
  status('Logging in…');
  client.connect();
  updateButtons();
}

function logout() {
  if (!client) return;
  if (session) session.end('success');
  const c = client;
  client = null;
  c.disconnect();
  status('Not logged in');
  updateButtons();
}

// ------------------------------------------------------------------ media

async function microphone() {
  // no echo cancellation / noise suppression / gain control: they would attenuate or reshape a
  // steady tone (the tests send one)
  return navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    video: false,
  });
}

function watchSession(s) {
  session = s;
  if (params.get('candidates') === 'loopback') {
    // send only 127.0.0.1 candidates (outside a loopback-only network namespace Chromium also
    // gathers the host's other addresses); stanza trickles every candidate through this method
    const send = s.onIceCandidate.bind(s);
    s.onIceCandidate = e => {
      const address = e.candidate.address || e.candidate.candidate.split(' ')[4];
      if (address === '127.0.0.1') send(e);
    };
  }
  s.pc.addEventListener('iceconnectionstatechange',
    () => emit('ice', { sid: s.sid, state: s.pc.iceConnectionState }));
  s.pc.addEventListener('connectionstatechange',
    () => emit('connection', { sid: s.sid, state: s.pc.connectionState }));
  // RTP counters once a second: tells "no packets" from "packets but silence" (and shows when
  // packets land on no track: trackIdentifier is empty for an SSRC that was not signalled)
  const timer = setInterval(async () => {
    if (s.pc.signalingState === 'closed') { clearInterval(timer); return; }
    const stats = { sid: s.sid };
    const reports = await s.pc.getStats();
    reports.forEach(r => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        const codec = reports.get(r.codecId);
        Object.assign(stats, {
          ssrc: r.ssrc, trackIdentifier: r.trackIdentifier, packetsReceived: r.packetsReceived,
          packetsLost: r.packetsLost, energy: r.totalAudioEnergy, audioLevel: r.audioLevel,
          codec: codec && `${codec.mimeType}/${codec.clockRate} pt ${codec.payloadType}`,
        });
      } else if (r.type === 'outbound-rtp' && r.kind === 'audio') {
        stats.packetsSent = r.packetsSent;
      }
    });
    emit('stats', stats);
  }, 1000);
  updateButtons();
}

function onRemoteTrack(s, track, stream) {
  if (track.kind !== 'audio') return;
  emit('remote-track', { sid: s.sid, id: track.id });
  // Chromium renders a remote WebRTC track into WebAudio only while a media element plays it
  const audio = $('remote');
  audio.srcObject = stream || new MediaStream([track]);
  audio.play().then(() => emit('playing', { sid: s.sid }),
                    e => emit('error', { where: 'audio.play', message: String(e) }));
  analyse(track);
}

function analyse(track) {
  stopAnalysis();
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(new MediaStream([track]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 32768;              // 1.5 Hz bins at 48 kHz
  analyser.smoothingTimeConstant = 0;
  source.connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  const binHz = ctx.sampleRate / analyser.fftSize;
  const timer = setInterval(() => {
    if (ctx.state === 'suspended') ctx.resume();
    analyser.getFloatFrequencyData(bins);    // dB
    // the loudest bin from 100 Hz to 4 kHz, refined by a parabola through it and its neighbours
    const lo = Math.ceil(100 / binHz), hi = Math.floor(4000 / binHz);
    let k = lo;
    for (let i = lo; i <= hi; i++) if (bins[i] > bins[k]) k = i;
    const [a, b, c] = [bins[k - 1], bins[k], bins[k + 1]];
    const denom = a - 2 * b + c;
    const offset = Number.isFinite(denom) && denom ? 0.5 * (a - c) / denom : 0;
    const hz = (k + offset) * binHz;
    const db = Number.isFinite(b) ? b : -200;      // silence gives -Infinity (not JSON)
    $('heard').textContent = db > -80 ? `${hz.toFixed(1)} Hz (${db.toFixed(0)} dB)` : 'silence';
    emit('heard', { hz: Math.round(hz * 10) / 10, db: Math.round(db * 10) / 10,
                    rate: ctx.sampleRate, state: ctx.state });
  }, 250);
  analysis = { ctx, timer };
}

function stopAnalysis() {
  if (!analysis) return;
  clearInterval(analysis.timer);
  analysis.ctx.close();
  analysis = null;
  $('heard').textContent = '–';
}

// ------------------------------------------------------------------ outgoing calls

// A full JID (with a resource) gets a session-initiate at once; a bare JID gets a JMI propose
// (XEP-0353, as Conversations does) and the session-initiate goes to whoever proceeds.
async function call(to) {
  to = (to || $('callee').value).trim();
  if (!client || !client.sessionStarted || session || proposing || !to) return;
  $('callee').value = to;
  status('Calling ' + to + '…');
  try {
    const stream = await microphone();
    if (XMPP.JID.parse(to).resource) {
      startSession(to, undefined, stream);
    } else {
      proposing = { to, id: client.nextId(), stream };
      sendJmi(to, { type: 'propose', id: proposing.id, media: 'audio' });
      emit('proposed', { to, id: proposing.id });
      updateButtons();
    }
  } catch (e) {
    status('Call failed: ' + e);
    emit('error', { where: 'call', message: String(e) });
  }
}

function startSession(to, sid, stream) {
  const s = client.jingle.createMediaSession(to, sid, stream);
  watchSession(s);
  emit('calling', { sid: s.sid, to });
  s.start();      // createOffer -> session-initiate, then trickled transport-info
}

function hangup(reason) {
  if (session) {
    // session-terminate; onTerminated follows. Before the answer, that is a cancel.
    session.end(reason || (session.state === 'active' ? 'success' : 'cancel'));
  } else if (proposing || jmiCall) {
    const { to, id } = proposing || { to: jmiCall.peer, id: jmiCall.id };
    sendJmi(to, { type: 'retract', id, reason: { condition: 'cancel' } });
    proposing = jmiCall = null;
    status('Call cancelled');
    updateButtons();
  }
}

// ------------------------------------------------------------------ incoming calls

function sendJmi(to, jmi) {
  client.sendMessage({ to, type: 'chat', jmi });
}

function onMessage(msg) {
  const jmi = msg.jmi;
  if (!jmi) return;
  emit('jmi', { action: jmi.type, id: jmi.id, from: msg.from,
                reason: jmi.reason && jmi.reason.condition });
  if (jmi.type === 'propose') {
    if (session || incoming || proposing) {
      sendJmi(msg.from, { type: 'reject', id: jmi.id, reason: { condition: 'busy' } });
      return;
    }
    incoming = { from: msg.from, id: jmi.id };
    sendJmi(msg.from, { type: 'ringing', id: jmi.id });
    ringIn(msg.from);
  } else if (jmi.type === 'proceed' && proposing && proposing.id === jmi.id) {
    // the callee's device that answered: the session goes to its full JID, sid = propose id
    const { id, stream } = proposing;
    proposing = null;
    jmiCall = { peer: msg.from, id };
    startSession(msg.from, id, stream);
  } else if (jmi.type === 'ringing' && proposing && proposing.id === jmi.id) {
    status('Ringing…');
  } else if (jmi.type === 'reject' && proposing && proposing.id === jmi.id) {
    proposing = null;
    status('Call rejected' + (jmi.reason ? ' (' + jmi.reason.condition + ')' : ''));
    updateButtons();
  } else if (jmi.type === 'retract' && incoming && incoming.id === jmi.id) {
    incoming = null;
    status('Missed call from ' + msg.from);
    updateButtons();
  } else if (jmi.type === 'finish' && jmiCall && jmiCall.id === jmi.id) {
    jmiCall = null;
    updateButtons();
  }
}

function ringIn(from) {
  $('incoming-from').textContent = from;
  status('Incoming call from ' + from);
  emit('ringing-in', { from, id: incoming.id || incoming.session.sid });
  updateButtons();
  if (params.get('answer') === 'auto') answer();
}

function onIncomingSession(s) {
  emit('incoming', { sid: s.sid, from: s.peerID });
  if (jmiCall && jmiCall.id === s.sid && jmiCall.stream) {
    // the session-initiate that follows our <proceed/>: accept it at once
    watchSession(s);
    accept(s, jmiCall.stream);
  } else if (session || incoming || proposing) {
    s.end('busy');
  } else {
    incoming = { session: s };    // a direct session-initiate without JMI: ask first
    ringIn(s.peerID);
  }
}

async function answer() {
  const pending = incoming;
  if (!pending) return;
  incoming = null;
  updateButtons();
  let stream;
  try {
    stream = await microphone();
  } catch (e) {
    emit('error', { where: 'answer', message: String(e) });
    if (pending.session) pending.session.end('failed-application');
    else sendJmi(pending.from, { type: 'reject', id: pending.id });
    return;
  }
  if (pending.session) {
    watchSession(pending.session);
    accept(pending.session, stream);
  } else {
    jmiCall = { peer: pending.from, id: pending.id, stream };
    status('Answering…');
    sendJmi(pending.from, { type: 'proceed', id: pending.id });
    emit('proceed-sent', { to: pending.from, id: pending.id });
  }
}

function accept(s, stream) {
  for (const track of stream.getTracks()) s.addTrack(track, stream);
  s.accept();          // createAnswer -> session-accept (queued after addTrack)
  status('In call with ' + s.peerID);
  emit('accepting', { sid: s.sid });
}

function reject() {
  const pending = incoming;
  if (!pending) return;
  incoming = null;
  if (pending.session) pending.session.decline();
  else sendJmi(pending.from, { type: 'reject', id: pending.id, reason: { condition: 'decline' } });
  status('Rejected the call');
  emit('rejected', {});
  updateButtons();
}

function onTerminated(s, reason) {
  emit('terminated', { sid: s.sid, reason: reason && reason.condition,
                       text: reason && reason.text });
  if (incoming && incoming.session === s) incoming = null;
  if (session === s) {
    session = null;
    stopAnalysis();
    $('remote').srcObject = null;
    status('Call ended' + (reason && reason.condition ? ' (' + reason.condition + ')' : ''));
  }
  if (jmiCall && jmiCall.id === s.sid) {
    sendJmi(jmiCall.peer, { type: 'finish', id: jmiCall.id,
                            reason: { condition: (reason && reason.condition) || 'success' } });
    jmiCall = null;
  }
  updateButtons();
}

// Key presses as RFC 4733 telephone-events on the call's audio sender (RTCDTMFSender: 100 ms
// tones, 70 ms gaps), for IVRs and PINs behind the gateway.
function sendTones(tones) {
  const sender = session && session.pc.getSenders().find(x => x.track && x.track.kind === 'audio');
  if (!sender || !sender.dtmf || !sender.dtmf.canInsertDTMF) {
    emit('dtmf', { tones, ok: false });
    return;
  }
  sender.dtmf.insertDTMF(tones, 100, 70);
  emit('dtmf', { tones, ok: true });
}

// ------------------------------------------------------------------ remote control (tests)

async function pollControl(url) {
  let after = 0;
  for (;;) {
    try {
      const resp = await fetch(`${url}?after=${after}`);
      const commands = await resp.json();
      for (const c of commands) {
        after = Math.max(after, c.seq);
        emit('command', { cmd: c.cmd, seq: c.seq });
        if (c.cmd === 'call') call(c.to);
        else if (c.cmd === 'hangup') hangup(c.reason);
        else if (c.cmd === 'answer') answer();
        else if (c.cmd === 'reject') reject();
        else if (c.cmd === 'login') login();
        else if (c.cmd === 'logout') logout();
        else if (c.cmd === 'dtmf') sendTones(c.tones);
      }
    } catch (e) {
      await new Promise(r => setTimeout(r, 200));   // the harness went away, or not up yet
    }
  }
}

// ------------------------------------------------------------------ wiring

$('login-form').addEventListener('submit', e => { e.preventDefault(); login(); });
$('logout').addEventListener('click', logout);
$('call-form').addEventListener('submit', e => { e.preventDefault(); call(); });
$('hangup').addEventListener('click', () => hangup());
$('answer').addEventListener('click', answer);
$('reject').addEventListener('click', reject);
$('send-tones').addEventListener('click', () => sendTones($('tones').value.trim()));
window.addEventListener('error', e => emit('error', { where: 'window', message: e.message }));
window.addEventListener('unhandledrejection',
  e => emit('error', { where: 'promise', message: String(e.reason) }));

emit('ready', { userAgent: navigator.userAgent });
if (params.get('control')) pollControl(params.get('control'));
if (params.get('login') === '1') login();
