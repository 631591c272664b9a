#!/usr/bin/env bash
# `make run`: Redis (started if none answers), database, quickstart automation, token, then
# mail catcher + worker + scheduler + Flower + api in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
redis_url=${TRIPMAIL_REDIS_URL:-redis://127.0.0.1:6379/0}
api_port=${TRIPMAIL_API_PORT:-8000}
flower_port=${TRIPMAIL_FLOWER_PORT:-5555}
worker_metrics_port=${TRIPMAIL_WORKER_METRICS_PORT:-9100}
# The api serves its metrics on its own port unless TRIPMAIL_METRICS_PORT gives them one.
api_metrics_port=${TRIPMAIL_METRICS_PORT:-$api_port}
mkdir -p var

redis_answers() { "$bin/python" -c 'import sys, redis; redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping()' "$redis_url" 2>/dev/null; }

started_redis=""
if ! redis_answers; then
  scripts/ensure-program.sh redis-server
  if ! redis_answers; then
    read -r host port < <("$bin/python" -c 'import sys; from urllib.parse import urlsplit; u = urlsplit(sys.argv[1]); print(u.hostname, u.port or 6379)' "$redis_url")
    if [[ "$host" != "127.0.0.1" && "$host" != "localhost" ]]; then
      echo "Redis at $redis_url does not answer, and it is not local, so it cannot be started here." >&2
      exit 1
    fi
    echo "starting redis-server on port $port (data and log under var/)"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --dir "$PWD/var" \
      --logfile "$PWD/var/redis.log" --pidfile "$PWD/var/redis.pid" --appendonly yes --maxmemory-policy noeviction
    for _ in $(seq 50); do redis_answers && break; sleep 0.1; done
    redis_answers || { echo "redis-server did not start: see var/redis.log" >&2; exit 1; }
    started_redis=$port
  fi
fi

"$bin/tripmail" migrate
"$bin/tripmail" apply examples/quickstart.yaml
token=$("$bin/tripmail" token create --workspace quickstart --scopes events:write,events:read | tail -n 1)

pids=()
cleanup() {
  trap - EXIT INT TERM
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  # Stop only a Redis this script started; its AOF under var/ keeps queued work for the next run.
  if [[ -n "$started_redis" && -f var/redis.pid ]]; then kill "$(cat var/redis.pid)" 2>/dev/null || true; fi
}
trap cleanup EXIT INT TERM
"$bin/tripmail" mailcatcher & pids+=($!)
TRIPMAIL_WORKER_METRICS_PORT=$worker_metrics_port "$bin/tripmail" worker & pids+=($!)
"$bin/tripmail" scheduler & pids+=($!)
"$bin/tripmail" flower --port "$flower_port" >var/flower.log 2>&1 & pids+=($!)
"$bin/tripmail" api --port "$api_port" & pids+=($!)

for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$api_port/healthz" >/dev/null || { echo "the api did not become healthy" >&2; exit 1; }

cat <<MSG

Tripmail is running: api http://127.0.0.1:$api_port (docs at /docs), mail catcher on 127.0.0.1:1025,
Flower (workers and tasks) at http://127.0.0.1:$flower_port, Prometheus metrics at
http://127.0.0.1:$api_metrics_port/metrics (api) and http://127.0.0.1:$worker_metrics_port/metrics (worker).
Send the quickstart's password-reset email:

curl -X POST http://127.0.0.1:$api_port/v1/events \\
  -H 'Authorization: Bearer $token' \\
  -H 'Content-Type: application/json' \\
  -d '{"event": "FORGOT_PASSWORD", "key": "reset-1", "contact": {"email": "user@example.com", "fields": {"first_name": "Ann"}}, "data": {"forgot_password_link": "https://app.example/reset/abc"}}'

Then read it: .venv/bin/tripmail mailcatcher --list   (the .eml files are in var/mail/)
Ctrl-C stops everything.

MSG
wait
