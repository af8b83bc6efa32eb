import time
def test_explore(prosody, gateway_factory):
    gw = gateway_factory(prosody.component_port, secret="bad")
    time.sleep(5.5)
    print("\nMETRICS(wrong secret):", gw.http_get("/metrics")[1])
    print("HEALTH:", gw.http_get("/about/health"))
    gw2 = gateway_factory(prosody.component_port)
    gw2.wait_healthy()
    print("VERSION:", gw2.http_get("/about/version"))
    print("STATS:", gw2.http_get("/about/stats"))
    prosody.stop(); t=time.monotonic(); gw2.wait_health(500, 10); print("unhealthy after", time.monotonic()-t, gw2.http_get("/about/health"))
    time.sleep(8)
    prosody.start(); t=time.monotonic(); gw2.wait_healthy(15); print("healthy again after", time.monotonic()-t)
    print("METRICS:", gw2.http_get("/metrics")[1])
