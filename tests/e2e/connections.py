#!/usr/bin/env python3
"""Connection-level probes of a running `cairn serve`, for hardening_test.sh.

usage: connections.py caps HOST PORT PER_CLIENT TOTAL
       connections.py slow-ws HOST PORT TOKEN SECONDS
       connections.py hold HOST PORT N SECONDS
Each prints one line per finding, "name value", for the shell test to check.
"""
import base64
import os
import socket
import struct
import sys
import time


def connect(host, port, source="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect((host, port))
    return s


def refused(s, wait=3.0):
    """True when the server answers an idle connection with 503 at once (it is over a limit)."""
    s.settimeout(wait)
    try:
        data = s.recv(4096)
    except socket.timeout:
        return False
    except ConnectionResetError:
        return False
    return data.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in data


def caps(host, port, per_client, total):
    first = [connect(host, port, "127.0.0.1") for _ in range(per_client)]
    time.sleep(0.5)  # the server counts them before the next arrives
    print("per_client_extra_refused", refused(connect(host, port, "127.0.0.1")))
    print("within_per_client_open", not any(refused(s, 0.2) for s in first))
    second = [connect(host, port, "127.0.0.2") for _ in range(total - per_client)]
    time.sleep(0.5)
    print("total_extra_refused", refused(connect(host, port, "127.0.0.3")))
    print("within_total_open", not any(refused(s, 0.2) for s in second))
    for s in first + second:
        s.close()
    time.sleep(0.5)
    s = connect(host, port, "127.0.0.3")
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    s.settimeout(5)
    print("after_close_served", s.recv(4096).startswith(b"HTTP/1.1 200"))


def ws_frame(text):
    """A masked text frame, as a client must send."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def slow_ws(host, port, token, seconds):
    """Sends pings and never reads: the server must close the connection."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /api/v1/ws?token={token} HTTP/1.1\r\nHost: {host}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    print("handshake", head.split(b"\r\n")[0].decode().replace(" ", "_"))
    batch = ws_frame('{"type":"ping"}') * 2000
    frame_len = len(batch) // 2000
    sent_bytes = 0
    started = time.monotonic()
    s.settimeout(1.0)
    closed = False
    while time.monotonic() - started < seconds:
        offset = sent_bytes % len(batch)
        try:
            sent_bytes += s.send(batch[offset:])  # whole frames only ever follow each other
        except socket.timeout:
            continue  # the server's receive buffer is full for now
        except OSError:
            closed = True
            break
    print("closed_by_server", closed)
    print("pings_sent", sent_bytes // frame_len)


def hold(host, port, n, seconds):
    """Opens n idle connections (as many as the server's descriptors allow) and holds them."""
    held = []
    for _ in range(n):
        try:
            held.append(connect(host, port))
        except OSError:
            break
    print("opened", len(held))
    sys.stdout.flush()
    time.sleep(seconds)
    for s in held:
        s.close()


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "caps":
        caps(host, port, int(sys.argv[4]), int(sys.argv[5]))
    elif mode == "slow-ws":
        slow_ws(host, port, sys.argv[4], float(sys.argv[5]))
    elif mode == "hold":
        hold(host, port, int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
