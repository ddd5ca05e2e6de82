"""The duologue session protocol, initiator side, on grpcio and nothing of duologue's:
what the Python clients here share (chat_client.py, a chat member; entity_client.py, a
client of entities). It speaks proto/duologue/v1/session.proto exactly as
docs/protocol.md describes it:

* the handshake: Hello -> Challenge (the acceptor's HMAC-SHA256 proof, checked here) ->
  Proof -> Welcome, or Refuse;
* data: Batch frames of sequenced envelopes with a piggybacked cumulative ack, lone Ack
  frames, a replay buffer of what the peer has not acknowledged yet; an envelope with an
  empty type_url (and no fault) has the type of the one before it in the batch; calls
  (an envelope with a call_id) and their answers (reply_to);
* credit, in messages and in bytes (version 5): never sends past either of the peer's
  credits (its `credit_window` and `credit_window_bytes` from the Challenge, raised by
  `Flow.credit` and `Flow.credit_bytes`), counting the payload bytes of every envelope it
  sent once; asks at once (`FlowQuery{next_seq, needed_bytes}`) when a message does not
  fit its byte credit; obeys Pause / Resume / resume_after_ms (a timed pause) / Throttle;
  grants the peer both credits as the client consumes what it receives, and holds the
  peer to them;
* resume: when the stream breaks, a new `Converse` call re-authenticates with
  `Hello.resume`, proving the session's resume key (derived from the first handshake),
  and both sides replay what the other has not received;
* the close handshake: Goodbye(FINISHED, last_seq), then the peer's final acks and its
  own Goodbye, a last Ack, and the end of the request stream; a peer that finishes first
  gets this client's Goodbye(FINISHED) at once;
* after a Refuse: half-close the request stream and let the response stream end (bounded)
  rather than cancel the call, so neither side's last frame is lost.

A client makes a `Session` (or a subclass naming its peer: `noun`, `no_calls`,
`unknown_target`) with an application object whose `deliver(envelope)` takes each
envelope of the peer, in order; queues casts and calls with `queue_cast` and
`queue_call`; and drives it with `run(on_event, deadline_of)`. `add_session_arguments`
adds the options the session reads.
"""

import collections
import hashlib
import hmac
import importlib
import os
import queue
import random
import secrets
import struct
import sys
import threading
import time
import uuid

PROTOCOL_VERSION = 5
NONCE_LEN = 32
PROOF_LEN = 32
MIN_SECRET_LEN = 16
# What a credit window of 0 in a Hello or Challenge means.
DEFAULT_CREDIT_WINDOW = 65536
# What a byte credit window of 0 in a Hello or Challenge means (version 5).
DEFAULT_CREDIT_WINDOW_BYTES = 8192
# What a max_message_bytes of 0 in a Hello or Challenge means.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# How long to wait for the response stream to end after a refusal, or after our goodbye.
STREAM_END_WAIT = 2.0
TYPE_URL_PREFIX = "type.googleapis.com/"

# Exit codes both clients share: 1 anything else, 2 usage (argparse), 3 wrong secret,
# 4 no such actor (room, entity kind) at the node, 5 unreachable.
EXIT_FAILURE, EXIT_AUTH, EXIT_UNKNOWN_TARGET, EXIT_UNREACHABLE = 1, 3, 4, 5


class Failure(Exception):
    """Ends the client: a message for stderr and an exit code."""

    def __init__(self, message, code=EXIT_FAILURE):
        super().__init__(message)
        self.code = code


class StreamBroken(Exception):
    """The current stream is gone; an established session may resume."""


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# Authentication: HMAC-SHA256 over the length-prefixed handshake transcript.


def read_secret(path):
    """The secret file's bytes, less one trailing newline (as `Secret::from_file`)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Failure(f"cannot read secret file {path}: {e.strerror}")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if len(data) < MIN_SECRET_LEN:
        raise Failure(f"the secret is {len(data)} bytes; at least {MIN_SECRET_LEN} needed")
    return data


INITIATOR_LABEL = b"duologue/v1 initiator proof"
ACCEPTOR_LABEL = b"duologue/v1 acceptor proof"
RESUME_KEY_LABEL = b"duologue/v1 resume key"
RESUME_PROOF_LABEL = b"duologue/v1 resume proof"


def resume_proof(key, session_id, initiator, acceptor, target, nonce_i, nonce_a,
                 last_received):
    """The initiator's proof on a resume stream: keyed with the session's resume key (the
    first handshake's transcript under RESUME_KEY_LABEL, keyed with the secret), over this
    stream's transcript under RESUME_PROOF_LABEL and the 8-byte big-endian last_received."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(proof_fields(RESUME_PROOF_LABEL, session_id, initiator, acceptor, target,
                            nonce_i, nonce_a))
    point = struct.pack(">Q", last_received)
    mac.update(struct.pack(">Q", len(point)))
    mac.update(point)
    return mac.digest()


def proof_fields(label, session_id, initiator, acceptor, target, nonce_i, nonce_a):
    """Each field as u64 big-endian length ‖ bytes, in the transcript's order."""
    out = b""
    for field in (label, session_id, initiator.name.encode("utf-8"), initiator.incarnation,
                  acceptor.name.encode("utf-8"), acceptor.incarnation, target.encode("utf-8"),
                  nonce_i, nonce_a):
        out += struct.pack(">Q", len(field)) + field
    return out


def proof(secret, label, session_id, initiator, acceptor, target, nonce_i, nonce_a):
    """HMAC-SHA256(secret, each field as u64 big-endian length ‖ bytes), fields in order:
    label, session id, initiator name, initiator incarnation, acceptor name, acceptor
    incarnation, target, initiator nonce, acceptor nonce."""
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for field in (
        label,
        session_id,
        initiator.name.encode("utf-8"),
        initiator.incarnation,
        acceptor.name.encode("utf-8"),
        acceptor.incarnation,
        target.encode("utf-8"),
        nonce_i,
        nonce_a,
    ):
        mac.update(struct.pack(">Q", len(field)))
        mac.update(field)
    return mac.digest()


# ----------------------------------------------------------------------------------------
# One gRPC stream (one `Converse` call): frames out through a queue the call's request
# iterator drains, frames in on a reader thread that posts them to the client's inbox.


class Stream:
    def __init__(self, grpc, stub_module, channel, epoch, inbox):
        self.epoch = epoch
        self.outbox = queue.Queue()
        self.closed = False
        stub = stub_module.DuologueStub(channel)
        self.call = stub.Converse(self._requests())
        self.reader = threading.Thread(target=self._read, args=(grpc, inbox), daemon=True)
        self.reader.start()

    def _requests(self):
        while True:
            frame = self.outbox.get()
            if frame is None:
                return  # ends the request stream: the gRPC half-close
            yield frame

    def _read(self, grpc, inbox):
        try:
            for frame in self.call:
                inbox.put(("frame", self.epoch, frame))
            inbox.put(("end", self.epoch, None))
        except grpc.RpcError as e:
            inbox.put(("error", self.epoch, e))

    def send(self, frame):
        if not self.closed:
            self.outbox.put(frame)

    def end_requests(self):
        """Half-closes the gRPC call: no more frames from this side."""
        if not self.closed:
            self.closed = True
            self.outbox.put(None)

    def cancel(self):
        self.end_requests()
        self.call.cancel()


# ----------------------------------------------------------------------------------------
# The session: the initiator side of the protocol.


class Session:
    """One session to the actor `target` at `args.peer`, as the node named `name`
    (`Hello.from`), announcing `protocol` (`Hello.protocol`; empty: unspecified). Every
    envelope the peer sends goes to `app.deliver(envelope)`, in order, its type URL
    resolved; calls from the peer are answered with a `no_reply` fault."""

    # How messages name the actor at the other end.
    noun = "the peer"
    # The fault message a call from the peer is answered with.
    no_calls = "this client answers no calls"

    def __init__(self, args, secret, grpc, pb, stubs, app, name, target, protocol=""):
        self.args = args
        self.secret = secret
        self.grpc = grpc
        self.pb = pb
        self.stubs = stubs
        self.app = app
        self.verbose = args.verbose
        self.inbox = queue.Queue()

        self.session_id = uuid.uuid4().bytes
        self.local = pb.NodeId(name=name, incarnation=uuid.uuid4().bytes)
        self.peer = None  # the acceptor's NodeId, once established
        self.resume_key = None  # derived from the first handshake; what a resume proves
        self.target = target
        self.protocol = protocol

        self.channel = None
        self.stream = None
        self.epoch = 0
        self.established = False

        # Sending.
        self.next_seq = 1
        self.transmitted = 0
        self.pending = collections.deque()  # (type_url, payload, call_id, timeout_ms)
        self.replies = collections.deque()  # (reply_to, fault code, fault message)
        self.in_flight = collections.deque()  # sent envelopes not acknowledged yet
        self.peer_acked = 0
        self.send_limit = args.max_message_bytes
        self.credit = DEFAULT_CREDIT_WINDOW  # highest seq the peer lets us send
        # Byte credit (version 5): the most payload bytes, summed over the session, the
        # peer lets us send; and what we sent so far, each seq counted once, replies too.
        self.credit_bytes = DEFAULT_CREDIT_WINDOW_BYTES
        self.sent_bytes = 0
        self.asked_bytes_for = None  # the seq a FlowQuery{needed_bytes} went out for
        self.byte_stalls = 0  # times sending stopped at the peer's byte credit
        self.paused = False
        self.resume_at = None
        self.bucket = None  # (rate per second, tokens, burst, last time) under a Throttle
        self.sent_times = collections.deque()  # send times in the last second (the rate)
        self.credit_stalls = 0  # times sending stopped at the peer's credit
        self.stalled = False

        # Receiving.
        self.received = 0
        self.delivered = 0
        self.ack_sent = 0
        self.window = max(1, args.credit_window)
        self.granted = self.window
        self.consumed = 0
        # Byte credit we grant the peer: our whole window at once, renewed as we consume
        # (this client consumes what it receives at once, so consumed == received).
        self.window_bytes = max(1, args.credit_window_bytes)
        self.granted_bytes = self.window_bytes
        self.received_bytes = 0
        self.consumed_bytes = 0

        # Closing.
        self.finishing = False  # the client is done: the goodbye follows what is queued
        self.goodbye = None  # our Goodbye, once sent
        self.peer_goodbye = None

        self.last_heard = time.monotonic()
        self.waiting_since = None  # since when data of ours waits for an ack
        self.factor = None  # the throttle factor in effect
        self.last_flow_at = None  # when the peer last sent a Flow
        self.held_since = None  # since when the peer's credit or pause holds a send back
        self.queried_at = None  # when we asked the peer to restate its flow state
        self.held_told = False

    # -- helpers ------------------------------------------------------------------------

    def trace(self, direction, frame):
        if self.verbose:
            text = str(frame).replace("\n", " ")
            log(f"[{direction}] {text[:300]}")

    def write(self, frame):
        self.trace("out", frame)
        self.stream.send(frame)

    def open_stream(self):
        self.epoch += 1
        if self.channel is not None:
            self.channel.close()
        options = [
            ("grpc.keepalive_time_ms", 1000),
            ("grpc.keepalive_timeout_ms", 1000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.enable_retries", 0),
        ]
        if self.args.tls_ca:
            # TLS: the node's certificate must chain to this CA. The HMAC proofs stay
            # unbound to it (Hello.bind_tls_certificate unset): grpcio does not show a
            # client the certificate it verified.
            with open(self.args.tls_ca, "rb") as ca:
                credentials = self.grpc.ssl_channel_credentials(root_certificates=ca.read())
            if self.args.tls_domain:
                options.append(("grpc.ssl_target_name_override", self.args.tls_domain))
            self.channel = self.grpc.secure_channel(self.args.peer, credentials, options=options)
        else:
            self.channel = self.grpc.insecure_channel(self.args.peer, options=options)
        self.stream = Stream(self.grpc, self.stubs, self.channel, self.epoch, self.inbox)

    def next_frame(self, deadline, what):
        """The next frame of the current stream, before `deadline`; raises StreamBroken."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamBroken(f"no {what} within {self.args.timeout:g}s")
            try:
                kind, epoch, item = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if epoch != self.epoch:
                continue  # from a stream given up already
            if kind == "frame":
                self.trace("in", item)
                self.last_heard = time.monotonic()
                return item
            if kind == "end":
                raise StreamBroken(f"the stream ended during the handshake (waiting for {what})")
            raise StreamBroken(describe(item))

    # -- the handshake --------------------------------------------------------------------

    def handshake(self, resume):
        """Greets the peer's node on a new stream. `resume`: continue this session."""
        pb = self.pb
        self.established = False  # until Welcome: errors are answered with Refuse
        self.open_stream()
        nonce_i = secrets.token_bytes(NONCE_LEN)
        hello = pb.Hello(
            **{"from": self.local},  # `from` is a Python keyword
            session_id=self.session_id,
            target=self.target,
            protocol_version=PROTOCOL_VERSION,
            nonce=nonce_i,
            max_message_bytes=self.args.max_message_bytes,
            credit_window=self.window,
            # Version 5: the byte credit we grant the peer to begin with. On a resume
            # stream the peer ignores it (the Flow restated after the Welcome says what
            # we granted), so it is the same on every Hello.
            credit_window_bytes=self.window_bytes,
            protocol=self.protocol,
        )
        if resume:
            hello.resume.last_received = self.received
            hello.resume.acceptor_incarnation = self.peer.incarnation
        self.write(pb.Frame(hello=hello))
        deadline = time.monotonic() + self.args.timeout

        frame = self.next_frame(deadline, "challenge")
        kind = frame.WhichOneof("kind")
        if kind == "refuse":
            raise self.refused(frame.refuse, resume)
        if kind != "challenge":
            raise self.protocol_error(f"expected Challenge, got {kind}")
        challenge = frame.challenge
        acceptor = getattr(challenge, "from")
        if (len(acceptor.incarnation) != 16 or len(challenge.nonce) != NONCE_LEN
                or len(challenge.proof) != PROOF_LEN):
            raise self.protocol_error("malformed Challenge")
        expected = proof(self.secret, ACCEPTOR_LABEL, self.session_id, self.local, acceptor,
                         self.target, nonce_i, challenge.nonce)
        if not hmac.compare_digest(expected, challenge.proof):
            self.write(pb.Frame(refuse=pb.Refuse(
                reason=pb.REFUSE_REASON_AUTH_FAILED,
                detail="the proof does not match this node's secret")))
            self.end_stream()  # so that our Refuse reaches the node
            raise Failure(f"authentication with {self.args.peer} failed: "
                          "the shared secrets differ (the node's proof is wrong)", EXIT_AUTH)
        if resume and acceptor.incarnation != self.peer.incarnation:
            raise Failure(f"session lost: {self.noun}'s node restarted "
                          f"(incarnation {self.peer.incarnation.hex()[:8]} is now "
                          f"{acceptor.incarnation.hex()[:8]})")
        if resume:
            mine = resume_proof(self.resume_key, self.session_id, self.local, acceptor,
                                self.target, nonce_i, challenge.nonce, hello.resume.last_received)
        else:
            mine = proof(self.secret, INITIATOR_LABEL, self.session_id, self.local, acceptor,
                         self.target, nonce_i, challenge.nonce)
        self.write(pb.Frame(proof=pb.Proof(proof=mine)))
        # The smaller of both limits; a peer that says 0 means the default, 4 MiB.
        self.send_limit = min(self.args.max_message_bytes,
                              challenge.max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES)
        if not resume:
            # The credit windows of the first handshake stay for the session: a resume
            # stream's Challenge states them again, and they are ignored.
            self.credit = challenge.credit_window or DEFAULT_CREDIT_WINDOW
            self.credit_bytes = challenge.credit_window_bytes or DEFAULT_CREDIT_WINDOW_BYTES

        frame = self.next_frame(deadline, "welcome")
        kind = frame.WhichOneof("kind")
        if kind == "refuse":
            raise self.refused(frame.refuse, resume)
        if kind != "welcome":
            raise self.protocol_error(f"expected Welcome, got {kind}")
        if frame.welcome.HasField("resumed") != bool(resume):
            raise self.protocol_error("Welcome.resumed does not match the greeting")
        if not resume:
            # What every later resume of this session proves.
            self.resume_key = proof(self.secret, RESUME_KEY_LABEL, self.session_id, self.local,
                                    acceptor, self.target, nonce_i, challenge.nonce)
        self.peer = acceptor
        self.established = True
        self.last_heard = time.monotonic()
        if resume:
            return self.resumed(frame.welcome.resumed.last_received)
        return 0

    def refused(self, refuse, resume):
        """The Failure a Refuse means. The stream ends after a Refuse: we half-close ours
        and let the node end its, rather than cancel the call."""
        pb = self.pb
        self.end_stream()
        name = pb.RefuseReason.Name(refuse.reason) if refuse.reason in pb.RefuseReason.values() \
            else str(refuse.reason)
        if refuse.reason == pb.REFUSE_REASON_UNSUPPORTED_VERSION:
            speaks = f"version {refuse.protocol_version}" if refuse.protocol_version \
                else "another version"
            return Failure(f"the node speaks protocol {speaks}, this client version "
                           f"{PROTOCOL_VERSION}: {refuse.detail}")
        if resume:
            return Failure(f"session lost: the resume was refused: {name}: {refuse.detail}")
        if refuse.reason == pb.REFUSE_REASON_AUTH_FAILED:
            return Failure(f"authentication with {self.args.peer} failed: "
                           "the shared secrets differ", EXIT_AUTH)
        if refuse.reason == pb.REFUSE_REASON_UNKNOWN_ACTOR:
            return self.unknown_target(refuse.detail)
        if refuse.reason == pb.REFUSE_REASON_PROTOCOL_MISMATCH:
            return Failure(f"{self.target!r} at {self.args.peer} speaks {refuse.protocol!r}, "
                           f"not {self.protocol!r}: {refuse.detail}")
        return Failure(f"the node refused the session: {name}: {refuse.detail}")

    def unknown_target(self, detail):
        """The Failure an UNKNOWN_ACTOR refusal means."""
        return Failure(f"no actor {self.target!r} at {self.args.peer}: {detail}",
                       EXIT_UNKNOWN_TARGET)

    def protocol_error(self, detail):
        """Tells the peer (Refuse before Welcome, Goodbye after) and fails."""
        pb = self.pb
        if self.stream is not None and not self.stream.closed:
            if self.established:
                frame = pb.Frame(goodbye=pb.Goodbye(reason=pb.GOODBYE_REASON_PROTOCOL_ERROR,
                                                    detail=detail,
                                                    last_seq=self.next_seq - 1))
            else:
                frame = pb.Frame(refuse=pb.Refuse(reason=pb.REFUSE_REASON_PROTOCOL_ERROR,
                                                  detail=detail))
            self.write(frame)
            self.end_stream()
        return Failure(f"protocol error: {detail}")

    def end_stream(self, bound=STREAM_END_WAIT):
        """Half-closes the request stream and waits, at most `bound` seconds, for the
        response stream to end. Cancelling the call at once could lose what is still on
        its way: our last frame (a Refuse, a Goodbye) or the node's. Returns the stream's
        error, if it ended with one."""
        if self.stream is None:
            return None
        self.stream.end_requests()
        end_by = time.monotonic() + bound
        while True:
            left = end_by - time.monotonic()
            if left <= 0:
                return None
            try:
                kind, epoch, item = self.inbox.get(timeout=left)
            except queue.Empty:
                return None
            if epoch == self.epoch and kind in ("end", "error"):
                return item if kind == "error" else None

    def resumed(self, peer_received):
        """After a resume handshake: replay what the peer has not received."""
        pb = self.pb
        if peer_received > self.transmitted:
            raise self.protocol_error(
                f"{self.noun} says it received {peer_received}, but only "
                f"{self.transmitted} were sent")
        replay = [e for e in self.in_flight if e.seq > peer_received]
        # Our last grant and ack may have been lost with the old stream: state them again,
        # both credits whole, with the signal in effect (this client never holds the peer
        # back: Resume).
        self.write(pb.Frame(flow=self.restated_flow()))
        self.held_since = self.queried_at = None
        # A FlowQuery{needed_bytes} may have been lost too: flush() asks again if a message
        # still does not fit.
        self.asked_bytes_for = None
        if replay:
            self.write(pb.Frame(batch=pb.Batch(ack=self.delivered, envelopes=replay)))
            self.waiting_since = time.monotonic()
        elif self.delivered:
            self.write(pb.Frame(ack=pb.Ack(seq=self.delivered)))
        self.ack_sent = self.delivered
        if self.goodbye is not None:
            self.write(pb.Frame(goodbye=self.goodbye))  # the peer ignores a repeat
        return len(replay)

    # -- sending --------------------------------------------------------------------------

    def queue_cast(self, type_url, payload):
        self.pending.append((type_url, payload, 0, 0))

    def queue_call(self, type_url, payload, call_id, timeout_ms):
        self.pending.append((type_url, payload, call_id, timeout_ms))

    def queue_reply(self, reply_to, code, message):
        """A fault reply to a call: replies skip both credits (a caller waits for them), but
        take a sequence number and count their payload bytes (none for a fault)."""
        self.replies.append((reply_to, code, message))

    def needs_bytes(self):
        """The cumulative byte credit the next pending envelope needs, when it does not fit
        the peer's byte credit (None when it fits, or nothing is pending). Payload bytes of
        every envelope sent (each seq once) plus this one's must stay within the credit."""
        if not self.pending:
            return None
        needed = self.sent_bytes + len(self.pending[0][1])
        return needed if needed > self.credit_bytes else None

    def blocked_until(self, now):
        """None to send now; a time to wait until; or float('inf') for credit (messages or
        bytes) / a Resume."""
        if self.next_seq > self.credit or self.paused or self.needs_bytes() is not None:
            return float("inf")
        if self.resume_at is not None and now < self.resume_at:
            return self.resume_at
        if self.bucket is not None:
            rate, tokens, burst, last = self.bucket
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens < 1.0:
                return now + (1.0 - tokens) / rate
        return None

    def note_sent(self, now):
        self.sent_times.append(now)
        while self.sent_times and self.sent_times[0] < now - 1.0:
            self.sent_times.popleft()
        if self.bucket is not None:
            rate, tokens, burst, last = self.bucket
            tokens = min(burst, tokens + (now - last) * rate) - 1.0
            self.bucket = (rate, tokens, burst, now)

    def flush(self):
        """Writes what may go now: one batch (with the ack), a lone ack, the goodbye."""
        pb = self.pb
        now = time.monotonic()
        envelopes = []
        if self.goodbye is not None:
            self.replies.clear()  # no data after our goodbye: those calls go unanswered
        while self.replies and len(envelopes) < 1024:
            reply_to, code, message = self.replies.popleft()
            envelopes.append(pb.Envelope(seq=self.next_seq, reply_to=reply_to,
                                         fault=pb.Fault(code=code, message=message)))
            self.next_seq += 1
        while self.pending and self.blocked_until(now) is None and len(envelopes) < 1024:
            type_url, payload, call_id, timeout_ms = self.pending.popleft()
            if len(payload) > self.send_limit:
                raise Failure(f"a message of {len(payload)} bytes exceeds the session's "
                              f"limit of {self.send_limit}")
            envelope = pb.Envelope(seq=self.next_seq, type_url=type_url, payload=payload,
                                   call_id=call_id, timeout_ms=timeout_ms)
            self.next_seq += 1
            self.sent_bytes += len(payload)  # counted once: a replay does not count again
            self.note_sent(now)
            envelopes.append(envelope)
        # A message that does not fit the byte credit: tell the peer at once what we need
        # (a peer that consumed everything it got has no reason of its own to grant more),
        # once per waiting envelope.
        needed = self.needs_bytes() if self.next_seq <= self.credit else None
        query = None
        if needed is not None and self.asked_bytes_for != self.next_seq:
            self.asked_bytes_for = self.next_seq
            self.byte_stalls += 1
            query = pb.Frame(flow_query=pb.FlowQuery(next_seq=self.next_seq,
                                                     needed_bytes=needed))
        held = bool(self.pending) and self.blocked_until(now) == float("inf")
        if not held:
            self.held_since = self.queried_at = None
            self.held_told = False
        elif self.held_since is None:
            self.held_since = now
        stalled = bool(self.pending) and self.next_seq > self.credit
        if stalled and (envelopes or not self.stalled):
            self.credit_stalls += 1
        self.stalled = stalled
        if envelopes:
            if not self.in_flight:
                self.waiting_since = now
            self.in_flight.extend(envelopes)
            self.transmitted = envelopes[-1].seq
            self.ack_sent = self.delivered
            self.write(pb.Frame(batch=pb.Batch(ack=self.delivered, envelopes=envelopes)))
        if query is not None:
            self.write(query)
        if self.delivered > self.ack_sent:
            self.ack_sent = self.delivered
            self.write(pb.Frame(ack=pb.Ack(seq=self.delivered)))
        if self.finishing and not self.pending and not self.replies and self.goodbye is None:
            self.goodbye = pb.Goodbye(reason=pb.GOODBYE_REASON_FINISHED,
                                      last_seq=self.next_seq - 1)
            self.write(pb.Frame(goodbye=self.goodbye))

    # -- receiving ------------------------------------------------------------------------

    def on_frame(self, frame):
        """Handles one frame of an established session."""
        pb = self.pb
        kind = frame.WhichOneof("kind")
        if kind == "batch":
            self.on_ack(frame.batch.ack)
            named = ""
            for envelope in frame.batch.envelopes:
                # A batch names a type once per run of envelopes of that type.
                if envelope.HasField("fault"):
                    pass
                elif envelope.type_url:
                    named = envelope.type_url
                else:
                    envelope.type_url = named
                if envelope.seq == 0:
                    raise self.protocol_error("envelope with sequence number 0")
                if envelope.seq <= self.received:
                    continue  # replayed after a resume, and already here
                if self.peer_goodbye is not None:
                    raise self.protocol_error(f"data after {self.noun}'s goodbye")
                if envelope.seq != self.received + 1:
                    raise self.protocol_error(
                        f"sequence gap: expected {self.received + 1}, got {envelope.seq}")
                if envelope.call_id and envelope.reply_to:
                    raise self.protocol_error(f"envelope {envelope.seq} is a call and a reply")
                if envelope.HasField("fault") and not envelope.reply_to:
                    raise self.protocol_error(f"envelope {envelope.seq}: a fault on a non-reply")
                # Both credits bind every envelope but replies; a reply's bytes still count.
                reply = envelope.reply_to != 0
                if not reply and envelope.seq > self.granted:
                    raise self.protocol_error(
                        f"message {envelope.seq} sent past the credit granted, {self.granted}")
                size = len(envelope.payload)
                if size > self.args.max_message_bytes:
                    raise self.protocol_error(
                        f"message {envelope.seq} of {size} bytes, larger than the "
                        f"{self.args.max_message_bytes} this client accepts")
                if not reply and self.received_bytes + size > self.granted_bytes:
                    raise self.protocol_error(
                        f"message {envelope.seq} sent past the byte credit granted, "
                        f"{self.granted_bytes} bytes")
                self.received = envelope.seq
                self.received_bytes += size
                if envelope.call_id:
                    # A callee that will not answer says so.
                    self.queue_reply(envelope.call_id, "no_reply", self.no_calls)
                else:
                    self.app.deliver(envelope)
                # Delivered and consumed at once: the client holds no backlog.
                self.delivered = self.consumed = envelope.seq
                self.consumed_bytes = self.received_bytes
            self.grant()
        elif kind == "ack":
            self.on_ack(frame.ack.seq)
        elif kind == "flow":
            self.on_flow(frame.flow)
        elif kind == "flow_query":
            # The peer waits for our grant: state it whole (we never pause the peer). When
            # it names more byte credit than we granted (a message that does not fit), grant
            # it, as far as our window goes (never short of our largest message).
            needed = frame.flow_query.needed_bytes
            if needed > self.granted_bytes:
                ceiling = self.consumed_bytes + max(self.window_bytes,
                                                    self.args.max_message_bytes)
                self.granted_bytes = max(self.granted_bytes, min(needed, ceiling))
            self.write(self.pb.Frame(flow=self.restated_flow()))
        elif kind == "goodbye":
            self.on_goodbye(frame.goodbye)
        else:
            raise self.protocol_error(f"unexpected {kind} in an established session")

    def on_ack(self, seq):
        if seq > self.transmitted:
            raise self.protocol_error(f"ack {seq} beyond the {self.transmitted} sent")
        self.peer_acked = max(self.peer_acked, seq)
        while self.in_flight and self.in_flight[0].seq <= seq:
            self.in_flight.popleft()
        self.waiting_since = self.last_heard if self.in_flight else None

    def grant(self):
        """More credit for the peer, in messages and in bytes, a quarter window at a time,
        as we consume; one Flow for both (0: no change)."""
        flow = {}
        if self.consumed + self.window >= self.granted + max(1, self.window // 4):
            self.granted = self.consumed + self.window
            flow["credit"] = self.granted
        if (self.consumed_bytes + self.window_bytes
                >= self.granted_bytes + max(1, self.window_bytes // 4)):
            self.granted_bytes = self.consumed_bytes + self.window_bytes
            flow["credit_bytes"] = self.granted_bytes
        if flow:
            self.write(self.pb.Frame(flow=self.pb.Flow(**flow)))

    def restated_flow(self):
        """Our flow state, whole: both credits granted so far, and the signal in effect
        (this client never holds the peer back: Resume)."""
        return self.pb.Flow(credit=self.granted, credit_bytes=self.granted_bytes,
                            resume=self.pb.Resume())

    def on_flow(self, flow):
        now = time.monotonic()
        self.last_flow_at = now
        self.credit = max(self.credit, flow.credit)
        self.credit_bytes = max(self.credit_bytes, flow.credit_bytes)
        signal = flow.WhichOneof("signal")
        if signal == "pause":
            self.paused, self.resume_at = True, None
        elif signal == "resume":
            self.paused, self.resume_at, self.bucket, self.factor = False, None, None, None
        elif signal == "resume_after_ms":
            self.paused, self.resume_at = False, now + flow.resume_after_ms / 1000.0
        elif signal == "throttle" and self.bucket is not None and flow.throttle == self.factor:
            pass  # restated after a resume or a query: the rate is not scaled twice
        elif signal == "throttle":
            factor = flow.throttle
            if not 0.0 < factor <= 1.0:
                raise self.protocol_error(f"throttle {factor} outside (0, 1]")
            self.factor = factor
            while self.sent_times and self.sent_times[0] < now - 1.0:
                self.sent_times.popleft()
            rate = max(1.0, factor * len(self.sent_times))
            self.bucket = (rate, 1.0, max(1.0, rate / 100.0), now)
        if signal and self.verbose:
            log(f"flow signal from {self.noun}: {signal}")

    def on_goodbye(self, goodbye):
        pb = self.pb
        if self.peer_goodbye is not None:
            if goodbye != self.peer_goodbye:
                raise Failure(f"session lost: {self.noun} ended it: {reason_name(pb, goodbye)}")
            return  # a farewell repeated after a resume
        if goodbye.reason != pb.GOODBYE_REASON_FINISHED:
            detail = f": {goodbye.detail}" if goodbye.detail else ""
            raise Failure(f"session lost: {self.noun} ended it: "
                          f"{reason_name(pb, goodbye)}{detail}")
        if goodbye.last_seq != self.received:
            raise self.protocol_error(
                f"goodbye names {goodbye.last_seq} as last, but {self.received} arrived")
        self.peer_goodbye = goodbye
        if not self.finishing:
            # The peer finished first (a chat room that let its member go): it expects our
            # own Goodbye(FINISHED), and the acks, within its farewell timeout, or it ends
            # the session with LIMIT_EXCEEDED. flush() sends it after what is queued.
            log(f"{self.noun} finished the session")
            self.finishing = True

    # -- the loop -------------------------------------------------------------------------

    def closed_politely(self):
        """Both sides finished, all of ours acknowledged, all of theirs delivered."""
        return (self.goodbye is not None and self.peer_goodbye is not None
                and not self.pending and not self.replies and not self.in_flight
                and self.delivered == self.received and self.ack_sent == self.delivered)

    def wake_at(self, now):
        """When the loop must look again without an event: throttle, resume-after,
        silence."""
        times = []
        if self.pending:
            until = self.blocked_until(now)
            if until is not None and until != float("inf"):
                times.append(until)
        if self.waiting_since is not None:
            times.append(max(self.waiting_since, self.last_heard) + self.args.silence_timeout)
        if self.held_since is not None and not self.held_told:
            times.append((self.queried_at or self.held_since) + self.args.silence_timeout)
        return min(times) if times else None

    def check_held_back(self, now):
        """Held back by the peer past the silence timeout: ask it to restate its flow
        state; unanswered, the stream is broken; answered and still held, say so once."""
        if self.held_since is None or self.held_told:
            return
        silence = self.args.silence_timeout
        if self.queried_at is None:
            if now >= self.held_since + silence:
                self.queried_at = now
                self.write(self.pb.Frame(flow_query=self.pb.FlowQuery(next_seq=self.next_seq)))
        elif now >= self.queried_at + silence:
            if self.last_flow_at is None or self.last_flow_at < self.queried_at:
                self.held_since = self.queried_at = None
                raise StreamBroken(
                    f"{self.noun} did not restate its flow state within {silence:g}s")
            self.held_told = True
            log(f"held back by {self.noun} for {now - self.held_since:.1f}s: it is not consuming")

    def run(self, on_event, deadline_of):
        """Runs until `on_event` says the conversation is over. `on_event(kind, item)`
        handles the client's events: "line" and "eof" (from `read_stdin`), "deadline" (the
        one `deadline_of()` returned passed), "peer_gone" (the peer ended its stream after
        its goodbye) and "progress" (after every frame and flush); `deadline_of()` is the
        client's own next deadline, if any."""
        while True:
            now = time.monotonic()
            wake = self.wake_at(now)
            app_deadline = deadline_of()
            if app_deadline is not None:
                wake = app_deadline if wake is None else min(wake, app_deadline)
            timeout = None if wake is None else max(0.0, wake - now)
            try:
                kind, epoch, item = self.inbox.get(timeout=timeout)
            except queue.Empty:
                kind, epoch, item = "tick", None, None
            try:
                if kind == "frame" and epoch == self.epoch:
                    self.trace("in", item)
                    self.last_heard = time.monotonic()
                    self.on_frame(item)
                elif kind in ("end", "error") and epoch == self.epoch:
                    if kind == "end" and self.peer_goodbye is not None:
                        # The peer ended its stream after its farewell: what we still
                        # owe it no longer matters to it.
                        if on_event("peer_gone", None):
                            return
                        continue
                    cause = "the stream ended without a goodbye" if kind == "end" \
                        else describe(item)
                    raise StreamBroken(cause)
                elif kind in ("line", "eof"):
                    if on_event(kind, item):
                        return
                elif kind == "tick":
                    now = time.monotonic()
                    if app_deadline is not None and now >= app_deadline:
                        on_event("deadline", None)
                    if (self.waiting_since is not None and now >= max(
                            self.waiting_since, self.last_heard) + self.args.silence_timeout):
                        raise StreamBroken(
                            f"no word from {self.noun} for {self.args.silence_timeout:g}s "
                            "with messages unacknowledged")
                    self.check_held_back(now)
                self.flush()
                if on_event("progress", None):
                    return
            except StreamBroken as broken:
                self.resume(str(broken))
                # What waited may go on the new stream (and a text still short of byte
                # credit asks for it again).
                self.flush()
                if on_event("progress", None):
                    return

    def resume(self, cause):
        """Resumes the session on a new stream, with backoff, until the deadline."""
        if self.args.no_resume:
            raise Failure(f"session lost: {cause}")
        log(f"session interrupted: {cause}")
        started = time.monotonic()
        deadline = started + self.args.resume_timeout
        attempt = 0
        while True:
            if self.stream is not None:
                self.stream.cancel()
            ceiling = min(1.0, 0.025 * (2 ** min(attempt, 16)))
            time.sleep(ceiling / 2 + random.random() * ceiling / 2)  # backoff with jitter
            attempt += 1
            try:
                replayed = self.handshake(resume=True)
                log(f"session resumed, {replayed} replayed, after "
                    f"{time.monotonic() - started:.1f}s")
                return
            except StreamBroken as broken:
                if time.monotonic() >= deadline:
                    raise Failure(f"session lost: no resume within "
                                  f"{self.args.resume_timeout:g}s ({broken})")

    def close(self):
        if self.stream is not None:
            self.stream.cancel()
        if self.channel is not None:
            self.channel.close()


def describe(error):
    try:
        return f"{error.code().name}: {error.details()}"
    except Exception:  # noqa: BLE001 - any RpcError-ish thing
        return str(error)


def reason_name(pb, goodbye):
    if goodbye.reason in pb.GoodbyeReason.values():
        return pb.GoodbyeReason.Name(goodbye.reason)
    return str(goodbye.reason)


# ----------------------------------------------------------------------------------------
# What the clients' command lines and setup share.


def read_stdin(inbox):
    """Posts each stdin line to `inbox` ("line"), then "eof"."""
    for line in sys.stdin:
        inbox.put(("line", None, line.rstrip("\r\n")))
    inbox.put(("eof", None, None))


def load_stubs(stubs_dir, modules, protos):
    """grpcio, the session's stubs, and the generated `modules` (dotted names), importable
    from `stubs_dir` (or already); `protos` are the files they are generated from, for the
    message that says how to make them."""
    if stubs_dir:
        sys.path.insert(0, stubs_dir)
    try:
        import grpc
    except ImportError as e:
        raise Failure(f"grpcio is not installed ({e}); pip install grpcio grpcio-tools")
    try:
        from duologue.v1 import session_pb2, session_pb2_grpc
        loaded = [importlib.import_module(module) for module in modules]
    except ImportError as e:
        raise Failure(f"cannot import the generated stubs ({e}); generate them with "
                      "python -m grpc_tools.protoc -I proto --python_out=DIR "
                      f"--grpc_python_out=DIR {' '.join(protos)}, and pass --stubs DIR")
    return grpc, session_pb2, session_pb2_grpc, loaded


def add_session_arguments(parser, peer, messages, timeout_help):
    """The options `Session` reads, after the client's own: --secret-file, --stubs,
    --timeout (`timeout_help` says what it bounds), the credit windows, the message limit,
    the silence and resume timeouts, --no-resume, TLS and -v. The help names the other
    end `peer` ("room") and what the client sends `messages` ("texts")."""
    parser.add_argument("--secret-file", required=True, help="the cluster's shared secret")
    parser.add_argument("--stubs", default=os.environ.get("DUOLOGUE_PY_STUBS"),
                        help="directory of the generated Python stubs")
    parser.add_argument("--timeout", type=float, default=10.0, help=timeout_help)
    parser.add_argument("--credit-window", type=int, default=1024,
                        help=f"messages the {peer} may send ahead of this client (1024)")
    parser.add_argument("--credit-window-bytes", type=int, default=1024 * 1024,
                        help=f"payload bytes the {peer} may send ahead of this client (1 MiB)")
    parser.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    parser.add_argument("--silence-timeout", type=float, default=3.0,
                        help=f"with {messages} unacknowledged, a {peer} silent this long "
                             "interrupts the stream (3)")
    parser.add_argument("--resume-timeout", type=float, default=30.0,
                        help="how long a broken session may take to resume (30)")
    parser.add_argument("--no-resume", action="store_true",
                        help="a broken stream ends the session instead of resuming it")
    parser.add_argument("--tls-ca",
                        help="PEM CA the node's certificate must chain to: connect over TLS")
    parser.add_argument("--tls-domain",
                        help="the name the node's certificate must carry, instead of the "
                             "host of --peer")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every frame")


def check_session_arguments(parser, args):
    """Refuses (exit 2) what `add_session_arguments` parsed but the session cannot use."""
    for name in ("credit_window", "credit_window_bytes", "max_message_bytes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def exit_now(code):
    """Exits with `code` without the interpreter's teardown, where grpcio can wait on its
    own threads (seen once under load: a client that had printed its refusal did not exit
    within 10 s). Everything must be said and closed by then."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
