#!/usr/bin/env bash
# The deployment files hold: `systemd-analyze verify` on deploy/systemd/*.service (with
# ExecStart pointing at the binaries just built), the Grafana dashboard parses as JSON,
# and the Dockerfile's recipe without a container runtime (none here): every binary it
# copies is one the workspace builds, and its CMD and HEALTHCHECK — run with its ENV,
# as a user that is not root — start the demo and find it healthy.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-$PWD/target/debug}
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-deploy: SKIPPED: systemd-analyze missing (Debian: apt-get install systemd)" >&2
    [ "${CI:-}" = true ] && exit 1
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in deploy/systemd/*.service; do
    sed "s|/usr/local/bin/|$bin/|g" "$unit" > "$work/$(basename "$unit")"
done
systemd-analyze verify "$work"/*.service
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' deploy/grafana/mdi.json

# --- the Dockerfile, dry run ---------------------------------------------------------
python3 - "$bin" "$work" <<'PY'
import json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
bin_dir, work = sys.argv[1], sys.argv[2]
text = open("Dockerfile").read().replace("\\\n", " ")
def fail(why):
    sys.exit(f"check-deploy: Dockerfile: {why}")
copied = set(re.findall(r"target/release/([A-Za-z0-9_-]+)", text))
meta = json.loads(subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                                 check=True, capture_output=True, text=True).stdout)
bins = {t["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}
if not copied or copied - bins:
    fail(f"copies {sorted(copied - bins)}, which the workspace does not build")
for needed in ("mdpub", "mdstat"):
    if needed not in copied:
        fail(f"{needed} is not in the image")
for path in re.findall(r"^COPY (?!--from)(\S+) ", text, re.M):
    if path != "." and not os.path.exists(path):
        fail(f"COPY {path}: no such file")
env = dict(os.environ)
for key, value in re.findall(r"^ENV (\w+)=(\S+)", text, re.M):
    env[key] = value
def command(instruction):
    m = re.search(rf"^{instruction} .*?(\[.*\])\s*$", text, re.M)
    if not m:
        fail(f"no {instruction} [...]")
    return json.loads(m.group(1))
cmd, health = command("CMD"), command("HEALTHCHECK")
# the container's /dev/shm (mode 1777) holds the image's MDI_SHM_DIR, made by mdpub
shm = tempfile.mkdtemp(prefix="mdi-docker-", dir="/dev/shm")
env["MDI_SHM_DIR"] = os.path.join(shm, os.path.basename(env.get("MDI_SHM_DIR", "mdi")))
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
cmd = [re.sub(r"^0\.0\.0\.0:\d+$", f"127.0.0.1:{port}", a) for a in cmd]
user = []
if os.geteuid() == 0:  # the image runs as USER mdi: here as nobody
    os.chmod(shm, 0o1777)
    user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
run = lambda c: user + [os.path.join(bin_dir, c[0])] + c[1:]
demo = subprocess.Popen(run(cmd), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
try:
    deadline = time.time() + 30
    while True:
        probe = subprocess.run(run(health), env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            break
        if demo.poll() is not None:
            fail(f"CMD {cmd} exited {demo.returncode}: {demo.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            fail(f"HEALTHCHECK {health} not healthy in 30 s: {probe.stdout}{probe.stderr}")
        time.sleep(0.3)
    metrics = subprocess.run(["python3", "-c",
        "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())",
        f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True)
    if "mdi_ring_records_total" not in metrics.stdout:
        fail(f"the CMD's --metrics endpoint does not serve mdi metrics: {metrics.stderr[-500:]}")
finally:
    demo.send_signal(signal.SIGTERM)
    try:
        demo.wait(timeout=10)
    except subprocess.TimeoutExpired:
        demo.kill()
    shutil.rmtree(shm, ignore_errors=True)
print("check-deploy: Dockerfile: its binaries are built; CMD and HEALTHCHECK run healthy (image not built: no container runtime here)")
PY
echo "check-deploy: systemd units verified, dashboard parses"
