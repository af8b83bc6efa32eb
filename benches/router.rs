//! Stanza router hot path: one inbound IQ → its reply, as the link driver does it.
//! Run with `make bench` (or `cargo bench --bench router`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use minidom::Element;
use xmpp_sip_gateway::xmpp::router::{Routed, Router};

const DISCO: &str = "<iq xmlns='jabber:component:accept' type='get' id='d1' from='juliet@example.com/phone' to='gateway.example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>";
const PING: &str = "<iq xmlns='jabber:component:accept' type='get' id='p1' from='juliet@example.com/phone' to='gateway.example.com'><ping xmlns='urn:xmpp:ping'/></iq>";
const GATEWAY: &str = "<iq xmlns='jabber:component:accept' type='set' id='g1' from='juliet@example.com/phone' to='gateway.example.com'><query xmlns='jabber:iq:gateway'><prompt>sip:bob@pbx.example.net</prompt></query></iq>";

fn bench(c: &mut Criterion) {
    let router = Router::new("gateway.example.com", '*');
    let mut out = Vec::with_capacity(4);
    for (name, xml) in [
        ("disco_info", DISCO),
        ("ping", PING),
        ("iq_gateway", GATEWAY),
    ] {
        let el: Element = xml.parse().expect("fixture parses");
        c.bench_function(&format!("route/{name}"), |b| {
            b.iter(|| {
                router.handle(black_box(&el), &mut out);
                black_box(out.drain(..).count())
            })
        });
        c.bench_function(&format!("parse_route_serialize/{name}"), |b| {
            b.iter(|| {
                let el: Element = black_box(xml).parse().expect("fixture parses");
                router.handle(&el, &mut out);
                let mut buf = Vec::with_capacity(512);
                for r in out.drain(..) {
                    if let Routed::Reply(r) = r {
                        r.write_to(&mut buf).expect("writing to a Vec cannot fail");
                    }
                }
                black_box(buf.len())
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
