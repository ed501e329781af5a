# Sourced by tests/containers.sh: docker-compose.yml brought up with Compose v2 and
# the README's walkthrough, then the Kubernetes sidecar manifest under podman kube play.

# expect_status WANT CURL-ARGS...: the HTTP status of one request.
expect_status() {
    local want=$1 got
    shift
    got=$(curl -s -o "$dir/body" -w '%{http_code}' --max-time 10 "$@") || true
    [ "$got" = "$want" ] || fail "curl $*: $got, wanted $want: $(head -c 300 "$dir/body")"
    echo "containers: $want  curl $(printf '%s ' "$@" | sed -E 's/Bearer [A-Za-z0-9._-]+/Bearer <token>/')"
}

# A provider token (client_credentials) from the host, as docker-compose.yml's comment shows.
provider_token() { # CLIENT SECRET SCOPE
    curl -sf --max-time 10 -u "$1:$2" -d grant_type=client_credentials -d "scope=$3" \
        -d resource=urn:test:api http://localhost:9000/token | jq -er .access_token
}

health_status() {
    podman inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null || true
}

# The stack's peers first (the provider and Backstage run npm ci from their committed
# lockfiles inside the node containers; Backstage compiles better-sqlite3), started by
# Compose while the stagedoor image builds; compose_walk's `compose up` then adds
# stagedoor and HAProxy to the same project.
peers_start() {
    phase "compose up the peers (provider, Backstage, echo), left starting"
    compose up -d --no-build --pull never oidc backstage echo >"$dir/compose-peers.log" 2>&1 ||
        { cat "$dir/compose-peers.log"; fail "compose up oidc backstage echo"; }
}

compose_walk() {
    phase "compose up (Compose v2 against podman's socket)"
    compose version
    local sd=stagedoor-demo-stagedoor-1
    # Compose starts stagedoor, waits for it to be healthy (keys from the provider, the
    # catalog from Backstage), then starts HAProxy.
    # --no-recreate: the peers peers_start started stay as they are (Compose would
    # otherwise recreate them, their npm ci included, for the larger project).
    compose up -d --no-build --pull never --no-recreate >"$dir/compose-up.log" 2>&1 &
    local up=$! deadline=$((SECONDS + 300)) failed_ready=0
    # Without systemd podman runs no healthcheck timers: this loop does what the timer
    # would, every `interval` (5 s), with `podman healthcheck run`, which records the
    # result in the health state Compose reads through the API. A healthcheck that keeps
    # failing while /readyz answers 200 is a broken healthcheck: fail at once.
    while kill -0 "$up" 2>/dev/null; do
        if [ "$(podman inspect -f '{{.State.Running}}' "$sd" 2>/dev/null)" = true ]; then
            if podman healthcheck run "$sd" >/dev/null 2>&1; then
                failed_ready=0
            elif nsenter -t "$(podman inspect -f '{{.State.Pid}}' "$sd")" -n \
                curl -sf --max-time 3 http://127.0.0.1:9901/readyz >/dev/null 2>&1; then
                failed_ready=$((failed_ready + 1))
            fi
        fi
        if [ "$failed_ready" -ge 3 ] || [ "$SECONDS" -ge "$deadline" ]; then
            kill "$up" 2>/dev/null || true
            cat "$dir/compose-up.log"
            compose ps -a || true
            podman inspect -f '{{json .State.Health}}' "$sd" | head -c 600 || true
            podman logs --tail 10 "$sd" || true
            [ "$failed_ready" -lt 3 ] || fail "the healthcheck fails while /readyz answers 200"
            fail "the stack was not up within 300 s"
        fi
        sleep 5
    done
    if ! wait "$up"; then
        cat "$dir/compose-up.log"
        compose ps -a || true
        compose logs --tail 30 || true
        fail "compose up"
    fi
    cat "$dir/compose-up.log"
    compose ps
    [ "$(health_status "$sd")" = healthy ] || fail "stagedoor is $(health_status "$sd"), not healthy"
    echo "containers: $sd healthy (its healthcheck, run by podman healthcheck run)"

    phase "compose walkthrough"
    local token bad
    token=$(provider_token svc svc-secret read)
    expect_status 200 -H "Authorization: Bearer $token" http://localhost:8080/echo
    jq -e '.x_auth_client == "svc" and .x_auth_subject != "" and (.x_auth_scopes | contains("read"))
        and .subject_headers == 1 and .x_auth_entity != ""' "$dir/body" >/dev/null ||
        fail "identity headers at the echo backend: $(cat "$dir/body")"
    echo "containers: echo backend saw $(jq -c '{x_auth_subject, x_auth_client, x_auth_scopes, x_auth_entity}' "$dir/body")"
    expect_status 401 http://localhost:8080/echo
    # POST /echo needs scope write; this token has read only.
    expect_status 403 -X POST -H "Authorization: Bearer $token" http://localhost:8080/echo
    # The same token with its signature reversed: well-formed, not verifiable.
    bad="${token%.*}.$(rev <<<"${token##*.}")"
    expect_status 401 -H "Authorization: Bearer $bad" http://localhost:8080/echo
    expect_status 200 http://localhost:8080/echo/health

    # Decision lines on stagedoor's stdout, none of them carrying the token.
    local logs
    sleep 0.5
    logs=$(podman logs "$sd" 2>/dev/null)
    grep -q '"decision":"allow".*"path":"/echo"\|"path":"/echo".*"decision":"allow"' <<<"$logs" ||
        fail "no allow decision line for /echo in podman logs $sd"
    grep '"decision"' <<<"$logs" | grep -q '"status":403' || fail "no 403 decision line in podman logs $sd"
    ! grep -qF "${token##*.}" <<<"$logs" || fail "the token's signature is in the logs"
    echo "containers: podman logs $sd: $(grep -c '"decision"' <<<"$logs") decision lines, e.g."
    grep '"decision":"allow"' <<<"$logs" | tail -n 1

    # The admin port is on the container's loopback (published nowhere, issue 11):
    # the host's curl reaches it inside the container's network namespace.
    local pid uid
    pid=$(podman inspect -f '{{.State.Pid}}' "$sd")
    nsenter -t "$pid" -n curl -sf --max-time 5 http://127.0.0.1:9901/readyz >"$dir/body" ||
        fail "/readyz from the host (in the container's netns): $(cat "$dir/body")"
    echo "containers: /readyz $(head -c 200 "$dir/body")"
    nsenter -t "$pid" -n curl -sf --max-time 5 http://127.0.0.1:9901/metrics >"$dir/body" || fail "/metrics"
    grep -q '^stagedoor_decisions_total{.*decision="allow"' "$dir/body" || fail "/metrics has no allow decisions"
    grep -E '^stagedoor_(decisions_total|catalog_routes|jwks_keys)' "$dir/body" | head -n 6
    # Not reachable from outside the container.
    local ip
    ip=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$sd")
    ! curl -s --max-time 3 "http://$ip:9901/healthz" >/dev/null || fail "admin reachable at $ip:9901"
    uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
    [ "$uid" = 65532 ] || fail "stagedoor runs as uid $uid"
    echo "containers: stagedoor runs as uid $uid; admin 9901 not reachable at $ip"
}

# The manifest as the sidecar test runs it: the same file with the cluster's addresses
# replaced by the compose stack's (provider, Backstage, echo backend), whose network
# the pod joins. Everything else (loopback listeners, probes, the Secret, the
# ConfigMap mount, emptyDir, securityContext) is as shipped.
sidecar_manifest() {
    local out=$1
    /usr/bin/python3 - "$repo/examples/kubernetes/stagedoor-sidecar.yaml" "$out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "ConfigMap":
        t = d["data"]["stagedoor.toml"]
        for a, b in [('issuer = "https://idp.example.com"',
                      'issuer = "http://oidc.localhost:9000"\nallow_insecure_http = true'),
                     ('audiences = ["internal-apis"]', 'audiences = ["urn:test:api"]'),
                     ('http://backstage.backstage.svc.cluster.local:7007', 'http://backstage:7007')]:
            assert a in t, a
            t = t.replace(a, b)
        d["data"]["stagedoor.toml"] = t
    if d["kind"] == "Deployment":
        # One replica: podman publishes containerPort 8080 on the host, which two
        # pods on one host cannot both bind (a cluster gives each pod its own IP).
        d["spec"]["replicas"] = 1
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                if e["name"] == "STAGEDOOR_BACKEND":
                    e["value"] = "echo:8081"
yaml.safe_dump_all(docs, open(sys.argv[2], "w"), sort_keys=False)
PY
}

# manifest_probe FILE CONTAINER PROBE: the exec command of a probe, as JSON.
manifest_probe() {
    /usr/bin/python3 - "$@" <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment")
c = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == sys.argv[2])
print(json.dumps(c[sys.argv[3]]["exec"]["command"]))
PY
}

sidecar_walk() {
    phase "Kubernetes sidecar (podman kube play)"
    local k=$dir/kube
    mkdir -p "$k"
    sidecar_manifest "$k/stagedoor-sidecar.yaml"
    # The Secret and HAProxy's ConfigMap, made as the manifest's comments say
    # (kubectl create secret / configmap). Podman 4.3 resolves secretKeyRef against a
    # podman secret holding the Secret's `data` as JSON (key: base64 value).
    printf '{"token":"%s"}' "$(printf demo-read-only-token | base64 -w0)" >"$k/secret.json"
    podman secret rm stagedoor-backstage >/dev/null 2>&1 || true
    podman secret create stagedoor-backstage "$k/secret.json" >/dev/null
    /usr/bin/python3 - "$repo/haproxy" "$k/haproxy-configmap.yaml" <<'PY'
import sys, yaml
d = sys.argv[1]
yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "haproxy-stagedoor"},
                "data": {f: open(f"{d}/{f}").read() for f in ["haproxy.cfg", "stagedoor.spoe.conf"]}},
               open(sys.argv[2], "w"))
PY
    # The compose stack's HAProxy holds the host's 8080, which the pod publishes.
    compose stop haproxy >/dev/null 2>&1
    podman kube play --network stagedoor-demo_default --configmap "$k/haproxy-configmap.yaml" \
        "$k/stagedoor-sidecar.yaml" >"$dir/kube-play.log" 2>&1 ||
        { cat "$dir/kube-play.log"; fail "podman kube play"; }
    local pod sd
    pod=$(podman pod ps --format '{{.Name}}' | grep '^gateway-pod' | head -n 1)
    sd=$(podman ps --filter "pod=$pod" --format '{{.Names}}' | grep -- '-stagedoor$')
    podman ps --filter "pod=$pod" --format '{{.Names}}  {{.Image}}  {{.Status}}'

    # The probes, exactly as the manifest runs them, inside the stagedoor container.
    local ready live ok=0
    ready=$(manifest_probe "$k/stagedoor-sidecar.yaml" stagedoor readinessProbe)
    live=$(manifest_probe "$k/stagedoor-sidecar.yaml" stagedoor livenessProbe)
    mapfile -t ready_cmd < <(jq -r '.[]' <<<"$ready")
    mapfile -t live_cmd < <(jq -r '.[]' <<<"$live")
    for _ in $(seq 120); do
        if podman exec "$sd" "${ready_cmd[@]}" >/dev/null 2>&1; then ok=1 && break; fi
        sleep 0.5
    done
    [ "$ok" = 1 ] || { podman logs --tail 20 "$sd"; fail "readiness probe $ready never passed"; }
    podman exec "$sd" "${live_cmd[@]}" >/dev/null || fail "liveness probe $live"
    echo "containers: readiness $ready and liveness $live pass in $sd"

    # Through HAProxy at the pod's address; stagedoor's ports are on the pod's loopback.
    local ip token pid uid
    ip=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(podman pod inspect -f '{{.InfraContainerID}}' "$pod")")
    token=$(provider_token svc svc-secret read)
    # HAProxy started beside stagedoor and checks the agent every 2 s (rise 2): until
    # two checks have passed since stagedoor was ready, it answers 503 (fail closed).
    for _ in $(seq 30); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $token" \
            "http://$ip:8080/echo")" != 503 ] && break
        sleep 0.5
    done
    expect_status 200 -H "Authorization: Bearer $token" "http://$ip:8080/echo"
    jq -e '.x_auth_client == "svc"' "$dir/body" >/dev/null || fail "identity headers: $(cat "$dir/body")"
    expect_status 401 "http://$ip:8080/echo"
    expect_status 403 -X POST -H "Authorization: Bearer $token" "http://$ip:8080/echo"
    for port in 12345 9901; do
        ! curl -s --max-time 3 "http://$ip:$port/" >/dev/null 2>&1 || fail "stagedoor's $port reachable at $ip"
    done
    pid=$(podman inspect -f '{{.State.Pid}}' "$sd")
    uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
    [ "$uid" = 65532 ] || fail "sidecar stagedoor runs as uid $uid"
    [ "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$sd")" = true ] || fail "root fs not read-only"
    echo "containers: sidecar stagedoor uid $uid, read-only root, 12345 and 9901 not reachable at $ip"
    podman kube down "$k/stagedoor-sidecar.yaml" >/dev/null 2>&1 || fail "podman kube down"
    podman secret rm stagedoor-backstage >/dev/null
}
