"""Wake up when the kernel's addresses or routes change (rtnetlink multicast).

network-wait starts before the DHCP lease exists; instead of polling it
sleeps on this socket and tries the WireServer again as soon as an address or
route appears, so it returns within a few milliseconds of the network coming
up, at no CPU cost while it waits.  The hostname unit uses it to see its own
DHCP restart complete.  Where netlink cannot be opened (no AF_NETLINK in a
sandbox, not Linux) ``wait`` falls back to sleeping a short poll interval.
Uses the C module ``_socket`` directly (see transport.py).
"""

import _socket
import errno
import select
import sys
import time

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE

RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
NAMES = {RTM_NEWLINK: "link", RTM_DELLINK: "link gone", RTM_NEWADDR: "address",
         RTM_DELADDR: "address gone", RTM_NEWROUTE: "route", RTM_DELROUTE: "route gone"}
AF_INET = 2
POLL = 0.1  # without netlink


def parse(data):
    """rtnetlink datagram -> [(message type, family, interface index)] for
    address/route/link messages; anything else or malformed is skipped."""
    events = []
    offset = 0
    order = sys.byteorder
    while offset + 16 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], order)
        kind = int.from_bytes(data[offset + 4:offset + 6], order)
        if length < 16 or offset + length > len(data):
            break
        body = data[offset + 16:offset + length]
        if kind in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= 8:
            # struct ifaddrmsg: family, prefixlen, flags, scope (u8), index (u32)
            events.append((kind, body[0], int.from_bytes(body[4:8], order)))
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and len(body) >= 12:
            # struct rtmsg: the interface is in an attribute; 0 = not looked at
            events.append((kind, body[0], 0))
        elif kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= 8:
            # struct ifinfomsg: family, pad (u8), type (u16), index (s32)
            events.append((kind, body[0], int.from_bytes(body[4:8], order)))
        offset += (length + 3) & ~3
    return events


def _strerror(code):
    import os

    return os.strerror(code)


class Changed(OSError):
    """A connection attempt was abandoned because the network changed under it."""


class Watcher(object):
    """Open it *before* looking at the network: changes from then on are
    queued in the socket, so none is missed between a check and ``wait``."""

    def __init__(self, groups=GROUPS):
        self.sock = None
        self.problem = None
        try:
            sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, NETLINK_ROUTE)
        except (AttributeError, OSError) as exc:
            self.problem = str(exc)
            return
        try:
            sock.bind((0, groups))
        except OSError as exc:
            sock.close()
            self.problem = str(exc)
            return
        self.sock = sock

    def wait(self, timeout):
        """Block up to ``timeout`` s for changes; returns the events seen
        ([] on timeout; [None] when the kernel dropped some: "something")."""
        if self.sock is None:
            time.sleep(max(0.0, min(timeout, POLL)))
            return [None]
        events = []
        wait = max(0.0, timeout)
        while True:
            self.sock.settimeout(wait)
            try:
                data = self.sock.recv(65536)
            except _socket.timeout:
                return events
            except BlockingIOError:
                return events
            except OSError:  # ENOBUFS: events were lost, so something changed
                events.append(None)
                wait = 0.0
                continue
            events.extend(parse(data))
            wait = 0.0  # drain what else is queued, then return

    def connect(self, host, port, timeout):
        """Try one TCP connection to host:port: None when it was accepted, else the
        OSError. An attempt started before the address existed can never complete
        (with a link route but no address, Linux sends the SYN from 0.0.0.0), so
        when the kernel reports an address/route change while it is pending, it
        is abandoned at once with Changed (the events stay queued for ``wait``)."""
        try:
            infos = _socket.getaddrinfo(host.encode("ascii"), port, 0, _socket.SOCK_STREAM)
        except OSError as exc:
            return exc
        family, kind, proto, _, address = infos[0]
        sock = _socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code == 0:
                return None
            if code != errno.EINPROGRESS:
                return OSError(code, _strerror(code))
            watch = [self.sock] if self.sock is not None else []
            readable, writable, _ = select.select(watch, [sock], [], max(0.0, timeout))
            if writable:
                code = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
                return None if code == 0 else OSError(code, _strerror(code))
            if readable:
                return Changed(errno.EAGAIN, "the network changed while connecting")
            return OSError(errno.ETIMEDOUT, "timed out")
        except OSError as exc:
            return exc
        finally:
            sock.close()

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
