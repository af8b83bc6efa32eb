//! The media engine (media B2BUA): a WebRTC leg (ICE + DTLS-SRTP) toward XMPP/Jingle peers and
//! a plain RTP leg toward SIP, with codec passthrough or transcoding between them. Being built
//! (issue: media engine); modules join here as they land with their tests.
