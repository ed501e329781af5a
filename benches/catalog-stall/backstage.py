# A stand-in Backstage for benches/catalog-stall/run.sh: N components, each with a filler annotation of FILL bytes; etags change
# every listing (CHURN=1), so every poll refetches everything.
import json, sys, http.server, threading
N = int(sys.argv[2]); FILL = int(sys.argv[3]); CHURN = int(sys.argv[4])
gen = [0]
import os, random
MANY = os.environ.get("MANY")
# ROUTES=n: each entity's routes annotation holds n route lines (a large policy);
# NOROUTES_AFTER=s: from s seconds after start, entities carry no routes (the wipe-out guard holds).
ROUTES = int(os.environ.get("ROUTES", "1"))
NOROUTES_AFTER = float(os.environ.get("NOROUTES_AFTER", "inf"))
import time
T0 = time.monotonic()
def routes(i):
    if time.monotonic() - T0 > NOROUTES_AFTER: return {}
    return {"stagedoor.io/routes": "\n".join(f"GET /s{i}/r{j} public" for j in range(ROUTES)) if ROUTES > 1 else f"GET /s{i} public"}
keys = [f"a.io/k{random.randrange(10**9)}" for _ in range(FILL)] if MANY else None
filler = "x" * FILL
def entity(i):
    return {"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": f"svc-{i}", "namespace": "default", "etag": f"e{gen[0]}-{i}",
                         "annotations": {**routes(i),
                                         "example.com/filler": filler} if not MANY else {**routes(i), **{k: "" for k in keys}}},
            "spec": {"owner": "team-a"}, "relations": []}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, body):
        b = body.encode() if isinstance(body, str) else body
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
    def do_GET(self):
        if CHURN: gen[0] += 1
        items = [{"kind": "Component", "metadata": {"name": f"svc-{i}", "namespace": "default", "etag": f"e{gen[0]}-{i}"}} for i in range(N)]
        self.reply(json.dumps({"items": items, "pageInfo": {}}))
    def do_POST(self):
        n = int(self.headers["Content-Length"]); req = json.loads(self.rfile.read(n))
        out = [entity(int(r.split("svc-")[1])) for r in req["entityRefs"]]
        sys.stderr.write(f"by-refs {len(out)} refs\n"); sys.stderr.flush()
        self.reply(json.dumps({"items": out}))
s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
s.serve_forever()
