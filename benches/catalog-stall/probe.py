# SPOP probe: one connection, one NOTIFY at a time; prints decisions and the longest
# round trips (the gaps between decisions), over DURATION seconds.
import socket, struct, sys, time
def varint(x):
    if x < 240: return bytes([x])
    out = [ (x | 240) & 0xff ]; x = (x - 240) >> 4
    while x >= 128:
        out.append((x | 128) & 0xff); x = (x - 128) >> 7
    out.append(x); return bytes(out)
def s(b): b = b.encode() if isinstance(b, str) else b; return varint(len(b)) + b
def kv_str(k, v): return s(k) + bytes([8]) + s(v)
def kv_null(k): return s(k) + bytes([0])
def frame(t, sid, fid, payload): body = bytes([t]) + struct.pack(">I", 1) + varint(sid) + varint(fid) + payload; return struct.pack(">I", len(body)) + body
hello = frame(1, 0, 0, kv_str("supported-versions", "2.0") + s("max-frame-size") + bytes([3]) + varint(16380) + kv_str("capabilities", "pipelining"))
def recv_frame(sock, buf):
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        d = sock.recv(65536)
        if not d: raise SystemExit("closed")
        buf += d
    n = struct.unpack(">I", buf[:4])[0]; return buf[4:4+n], buf[4+n:]
port, duration = int(sys.argv[1]), float(sys.argv[2])
sock = socket.create_connection(("127.0.0.1", port)); sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sock.sendall(hello); f, buf = recv_frame(sock, b""); assert f[0] == 101, f[:20]
msg = s("authorize") + bytes([4]) + kv_str("method", "GET") + kv_str("path", "/s1") + kv_str("host", "a.example") + kv_null("authorization")
start = time.monotonic(); gaps = []; fid = 0; worst = []
while time.monotonic() - start < duration:
    fid += 1; t0 = time.monotonic()
    sock.sendall(frame(3, fid, 1, msg)); f, buf = recv_frame(sock, buf)
    if f[0] != 103: raise SystemExit(f"frame type {f[0]}")
    gaps.append((time.monotonic() - t0, t0 - start))
gaps.sort(reverse=True)
lat = sorted(g for g, _ in gaps)
print(f"decisions={len(gaps)} p50={lat[len(lat)//2]*1e3:.2f}ms p99={lat[int(len(lat)*0.99)]*1e3:.2f}ms p999={lat[int(len(lat)*0.999)]*1e3:.2f}ms max={lat[-1]*1e3:.1f}ms")
print("worst:", ", ".join(f"{g*1e3:.1f}ms@{t:.1f}s" for g, t in gaps[:10]))
print("over100ms:", sum(1 for g, _ in gaps if g > 0.1), "over20ms:", sum(1 for g, _ in gaps if g > 0.02))
