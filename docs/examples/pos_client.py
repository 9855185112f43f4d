#!/usr/bin/env python3
"""Till-side client for storegw's POS push (POST /v1/pos/transactions), standard library only.

Sends one JSON document (a transaction object or an array of them) and retries the way
docs/pos.md asks: on 503 it waits what Retry-After says, on 408, other 5xx and network
errors it backs off exponentially with jitter, and it gives up only at the deadline. The
transaction ids stay the same across retries, so a retry after a lost answer is recognised as
a duplicate (200) and never stored twice. 400, 401, 409, 413 and 415 are not retried: the
request itself must change.

    python3 pos_client.py --url http://127.0.0.1:9380 --token-file /etc/storegw/pos.token tx.json
    echo '{"transaction_id": "T-1", ...}' | python3 pos_client.py --token-file pos.token -

Exit status: 0 stored or already stored (201/200), 1 refused (4xx: fix the request), 2 gave
up at the deadline (keep the transaction and send it again later).
"""

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.request

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def retry_after_seconds(value):
    """Retry-After as seconds (storegw sends delta-seconds); None when absent or unreadable."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def post(url, token, body, timeout):
    """One attempt. Returns (status, headers, body bytes); raises OSError on network errors."""
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Authorization": "Bearer " + token,
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:  # 4xx/5xx still carry a JSON body
        with e:
            return e.code, e.headers, e.read()


def push(url, token, document, deadline_s=600.0, timeout_s=35.0, base_s=0.5, cap_s=60.0):
    """Sends `document` until it is stored, refused, or the deadline passes.

    Returns (exit code, status or None, parsed body or None).
    """
    body = json.dumps(document).encode("utf-8")
    end = time.monotonic() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            status, headers, raw = post(url, token, body, timeout_s)
        except OSError as e:  # refused, reset, DNS, timeout: the body may or may not be stored
            status, headers, raw = None, {}, b""
            reason = "network error: %s" % (getattr(e, "reason", None) or e)
        else:
            reason = "HTTP %d" % status
        try:
            answer = json.loads(raw) if raw else None
        except ValueError:
            answer = {"error": raw.decode("utf-8", "replace").strip()}
        if status in (200, 201):
            return 0, status, answer
        if status is not None and status not in RETRY_STATUSES:
            log("refused with %d: %s" % (status, answer))
            return 1, status, answer
        # Full jitter between 0 and the exponential step; Retry-After is a floor when given.
        wait = random.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))
        server_wait = retry_after_seconds(headers.get("Retry-After")) if status else None
        if server_wait is not None:
            wait = max(wait, server_wait)
        left = end - time.monotonic()
        if wait > left:
            after = " (Retry-After %g s)" % server_wait if server_wait is not None else ""
            log("gave up after %d attempts: %s%s; deadline reached" % (attempt, reason, after))
            return 2, status, answer
        after = ", Retry-After %g s" % server_wait if server_wait is not None else ""
        log("attempt %d: %s%s; retrying in %.1f s" % (attempt, reason, after, wait))
        time.sleep(wait)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", help="JSON file with one transaction or an array ('-' for stdin)")
    ap.add_argument("--url", default="http://127.0.0.1:9380", help="gateway base URL")
    ap.add_argument("--token-file", required=True, help="file holding the bearer token")
    ap.add_argument("--deadline", type=float, default=600.0, help="give up after this many seconds")
    ap.add_argument("--timeout", type=float, default=35.0, help="seconds per attempt")
    args = ap.parse_args(argv)
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    if args.file == "-":
        document = json.load(sys.stdin)
    else:
        with open(args.file, encoding="utf-8") as f:
            document = json.load(f)
    code, status, answer = push(
        args.url.rstrip("/") + "/v1/pos/transactions",
        token,
        document,
        deadline_s=args.deadline,
        timeout_s=args.timeout,
    )
    print(json.dumps({"status": status, "answer": answer}))
    return code


if __name__ == "__main__":
    sys.exit(main())
