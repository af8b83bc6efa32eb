//! A nesting limit on the component stream, applied to the bytes before the XML parser sees
//! them. Any XMPP user can send a stanza of thousands of nested elements (Prosody forwards
//! it); every later step that walks an element tree recursively — building, cloning,
//! serialising, dropping it — would then run out of stack and abort the process. Here, an
//! element that would sit deeper than `xmpp.max_stanza_depth` below its stanza is cut out,
//! whole, and replaced by one empty marker element ([`MARKER`]); the router answers such a
//! stanza with `policy-violation` (IQ get/set) or drops it, and counts it.
//!
//! The scanner knows just enough XML to count depth: start tags (with `/>` and quoted
//! attribute values that may hold `>` or `/`), end tags, processing instructions and `<!…>`
//! declarations. Text needs no care: `<` in text is always markup. Pure, one byte at a time,
//! no allocation beyond the output.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The element put where a too-deep subtree was cut.
pub const MARKER: &str = "depth-limit";
/// Its namespace (ours).
pub const NS_LIMITS: &str = "urn:xmpp-sip-gateway:limits:0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    /// After `<`.
    Lt,
    /// Inside a start tag; `slash` when the last non-quoted byte was `/`.
    StartTag {
        slash: bool,
    },
    /// Inside a quoted attribute value of a start tag.
    Quoted(u8),
    EndTag,
    /// `<?…?>` or `<!…>`: up to the next `>`.
    Other,
}

/// Filters the component stream's bytes; see the module doc.
#[derive(Debug)]
pub struct DepthGuard {
    /// Deepest element kept, counted from the stream root (1); stanzas are at 2.
    max_abs: u32,
    depth: u32,
    state: State,
    /// While cutting: the depth the cut subtree's parent is at.
    cutting: Option<u32>,
    /// Subtrees cut so far, shared with the link: only while it is ahead of the cut stanzas
    /// already refused does a stanza need to be searched for the marker.
    cuts: Arc<AtomicU64>,
}

impl DepthGuard {
    /// `max_stanza_depth`: elements a stanza may nest, the stanza itself being 1.
    pub fn new(max_stanza_depth: u32, cuts: Arc<AtomicU64>) -> Self {
        DepthGuard {
            max_abs: max_stanza_depth.saturating_add(1),
            depth: 0,
            state: State::Text,
            cutting: None,
            cuts,
        }
    }

    /// Subtrees cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Relaxed)
    }

    /// A new stream (after a reconnect) starts from the top.
    pub fn reset(&mut self) {
        self.depth = 0;
        self.state = State::Text;
        self.cutting = None;
    }

    /// Appends `input`, less what is too deep, to `out`. A `<` at the end of `input` is held
    /// back until the next call decides what it opens.
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.byte(b, out);
        }
    }

    fn keep(&self, b: u8, out: &mut Vec<u8>) {
        if self.cutting.is_none() {
            out.push(b);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Text => {
                if b == b'<' {
                    // Held back: only the next byte tells whether this opens an element.
                    self.state = State::Lt;
                } else {
                    self.keep(b, out);
                }
            }
            State::Lt => {
                self.state = match b {
                    b'/' => State::EndTag,
                    b'?' | b'!' => State::Other,
                    _ => State::StartTag { slash: false },
                };
                if matches!(self.state, State::StartTag { .. })
                    && self.cutting.is_none()
                    && self.depth >= self.max_abs
                {
                    // This element would be too deep: cut it (and all it holds) out.
                    self.cutting = Some(self.depth);
                    self.cuts.fetch_add(1, Relaxed);
                    out.extend_from_slice(format!("<{MARKER} xmlns='{NS_LIMITS}'/>").as_bytes());
                }
                if self.cutting.is_none() {
                    out.push(b'<');
                    out.push(b);
                }
            }
            State::StartTag { slash } => {
                self.keep(b, out);
                match b {
                    b'"' | b'\'' => self.state = State::Quoted(b),
                    b'>' => {
                        if !slash {
                            self.depth += 1;
                        }
                        self.state = State::Text;
                        self.end_cut_if_closed();
                    }
                    b'/' => self.state = State::StartTag { slash: true },
                    _ if slash && b.is_ascii_whitespace() => {}
                    _ => self.state = State::StartTag { slash: false },
                }
            }
            State::Quoted(q) => {
                self.keep(b, out);
                if b == q {
                    self.state = State::StartTag { slash: false };
                }
            }
            State::EndTag => {
                self.keep(b, out);
                if b == b'>' {
                    self.depth = self.depth.saturating_sub(1);
                    self.state = State::Text;
                    self.end_cut_if_closed();
                }
            }
            State::Other => {
                self.keep(b, out);
                if b == b'>' {
                    self.state = State::Text;
                }
            }
        }
    }

    /// The cut subtree closed (its end tag, or it was `<…/>`): keep bytes again.
    fn end_cut_if_closed(&mut self) {
        if self.cutting == Some(self.depth) {
            self.cutting = None;
        }
    }
}

/// Whether `el` had a subtree cut by the guard. Walks at most as deep as the guard let the
/// stanza be (without recursion).
pub fn was_cut(el: &minidom::Element) -> bool {
    let mut stack = vec![el];
    while let Some(e) = stack.pop() {
        if e.is(MARKER, NS_LIMITS) {
            return true;
        }
        stack.extend(e.children());
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(limit: u32, chunks: &[&str]) -> (String, u64) {
        let mut g = DepthGuard::new(limit, Arc::default());
        let mut out = Vec::new();
        for c in chunks {
            g.filter(c.as_bytes(), &mut out);
        }
        (String::from_utf8(out).unwrap(), g.cuts())
    }

    const OPEN: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>";

    #[test]
    fn shallow_stanzas_pass_unchanged_in_any_chunking() {
        let stanza = "<iq type='get' id='a/b>c' from=\"x/y\"><query xmlns='q'><item a='1'/><item>t &gt; 1 / 2</item></query></iq>";
        let whole = format!("{OPEN}{stanza}");
        for split in 0..whole.len() {
            let (out, cuts) = run(8, &[&whole[..split], &whole[split..]]);
            assert_eq!(out, whole, "split at {split}");
            assert_eq!(cuts, 0);
        }
    }

    #[test]
    fn too_deep_subtrees_are_cut_and_marked_and_the_stream_goes_on() {
        let deep = format!("{}{}", "<a>".repeat(5000), "</a>".repeat(5000));
        let input = format!(
            "{OPEN}<iq type='get' id='1'><q xmlns='x'>{deep}</q></iq><message id='2'><body>hi</body></message>"
        );
        let (out, cuts) = run(4, &[&input]);
        assert_eq!(cuts, 1);
        // iq(1) q(2) a(3) a(4) kept, the fifth level replaced by the marker.
        let expected = format!(
            "{OPEN}<iq type='get' id='1'><q xmlns='x'><a><a><{MARKER} xmlns='{NS_LIMITS}'/></a></a></q></iq><message id='2'><body>hi</body></message>"
        );
        assert_eq!(out, expected);
        // What comes out parses, and the stanza says it was cut.
        let start = out.find("<iq").unwrap();
        let end = out.find("</iq>").unwrap() + 5;
        let parsed: minidom::Element = out[start..end]
            .replacen("<iq ", "<iq xmlns='jabber:component:accept' ", 1)
            .parse()
            .expect("the cut stanza parses");
        assert!(was_cut(&parsed));
    }

    #[test]
    fn self_closing_and_quoted_slashes_do_not_count_as_depth() {
        let input = format!(
            "{OPEN}<p a='/>' b=\"/\"/><p x='1' />{}",
            "<p><x/><y z='>'/></p>"
        );
        let (out, cuts) = run(1, &[&input]);
        // Depth 1 allows the stanza but not its children: <x/> and <y/> are cut.
        assert_eq!(cuts, 2);
        assert!(out.starts_with(&format!("{OPEN}<p a='/>' b=\"/\"/><p x='1' /><p>")));
        assert!(out.ends_with("</p>"));
    }

    #[test]
    fn a_reset_starts_a_new_stream() {
        let mut g = DepthGuard::new(2, Arc::default());
        let mut out = Vec::new();
        g.filter(format!("{OPEN}<iq><a>").as_bytes(), &mut out);
        g.reset();
        out.clear();
        g.filter(format!("{OPEN}<iq><a></a></iq>").as_bytes(), &mut out);
        assert_eq!(g.cuts(), 0);
    }
}
