"""A CPU-bound Python workload for the wild panel: json, re, hashlib, sorting with a
key function, exceptions, recursion, generators, and a second thread.

    python3 pyload.py [SECONDS]     (runs forever without an argument)
"""

import hashlib
import json
import re
import sys
import threading
import time

WORDS = re.compile(r"[a-z]+(?:_[a-z0-9]+)*")


def make_doc(n):
    return {"items": [{"id": i, "name": f"item_{i}", "tags": ["a", "b", str(i % 7)],
                       "score": (i * 7919) % 1000 / 7.0} for i in range(n)]}


def json_round(n):
    text = json.dumps(make_doc(n))
    return len(json.loads(text)["items"])


def regex_round(text):
    return sum(len(m.group(0)) for m in WORDS.finditer(text))


def hash_round(data):
    h = hashlib.sha256()
    for _ in range(20):
        h.update(data)
    return h.hexdigest()


def sort_round(n):
    rows = [((i * 2654435761) % 10007, f"k{i}") for i in range(n)]
    return sorted(rows, key=lambda r: (r[0] % 97, r[1]))[0]


def fail(depth):
    if depth == 0:
        raise ValueError("bottom")
    return fail(depth - 1)


def exception_round():
    caught = 0
    for d in range(30):
        try:
            fail(d)
        except ValueError:
            caught += 1
    return caught


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def gen_round(n):
    squares = (i * i for i in range(n))
    return sum(x for x in squares if x % 3)


def one_round():
    text = " ".join(f"word_{i} other{i % 13}" for i in range(400))
    return (json_round(200), regex_round(text), hash_round(text.encode()),
            sort_round(2000), exception_round(), fib(16), gen_round(5000),
            list(map(str, range(500)))[-1])


def worker(stop):
    while not stop.is_set():
        fib(18)
        sort_round(1000)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else float("inf")
    stop = threading.Event()
    t = threading.Thread(target=worker, args=(stop,), name="pyload-worker")
    t.start()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            one_round()
    finally:
        stop.set()
        t.join()


if __name__ == "__main__":
    main()
