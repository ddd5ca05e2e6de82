#!/usr/bin/env python3
"""A duologue chat member written in Python, on grpcio and nothing of duologue's.

It speaks the session protocol of proto/duologue/v1/session.proto to a `duologue node`
hosting a chat room, exactly as docs/protocol.md describes it (the session machinery is
duologue_session.py, beside this file, shared with entity_client.py):

* the handshake: Hello -> Challenge (the acceptor's HMAC-SHA256 proof, checked here) ->
  Proof -> Welcome, or Refuse;
* data: Batch frames of sequenced envelopes with a piggybacked cumulative ack, lone Ack
  frames, a replay buffer of what the room has not acknowledged yet; an envelope with an
  empty type_url (and no fault) has the type of the one before it in the batch;
* credit, in messages and in bytes (version 5): never sends past either of the room's
  credits (its `credit_window` and `credit_window_bytes` from the Challenge, raised by
  `Flow.credit` and `Flow.credit_bytes`), counting the payload bytes of every envelope it
  sent once; asks at once (`FlowQuery{next_seq, needed_bytes}`) when a text does not fit
  its byte credit; obeys Pause / Resume / resume_after_ms (a timed pause) / Throttle; grants the room both
  credits as this client consumes what it receives, and holds the room to them;
* resume: when the stream breaks, a new `Converse` call re-authenticates with
  `Hello.resume`, proving the session's resume key (derived from the first handshake),
  and both sides replay what the other has not received;
* the close handshake: Goodbye(FINISHED, last_seq), then the room's final acks and its own
  Goodbye, a last Ack, and the end of the request stream; a room that finishes first
  (it let this member go: FellBehind) gets this client's Goodbye(FINISHED) at once;
* after a Refuse: half-close the request stream and let the response stream end (bounded)
  rather than cancel the call, so neither side's last frame is lost.

The chat on top: JOIN is a call (an envelope with a call_id; the WELCOME comes back as the
envelope whose reply_to is that id), every stdin line is one TEXT cast, every relayed text
is printed on stdout as `FROM: TEXT`. At the end of stdin it half-closes, waits for the
room's acks and exits 0, printing `left ROOM: N messages sent, N acked` on stderr.

    python3 chat_client.py --peer 127.0.0.1:PORT --room lobby --user py \
        --secret-file cluster.secret --stubs DIR

DIR holds the stubs generated from the protos (`python -m grpc_tools.protoc -I proto
--python_out=DIR --grpc_python_out=DIR proto/duologue/v1/session.proto
proto/duologue/chat/v1/chat.proto`); without --stubs they must be importable already
(or named by $DUOLOGUE_PY_STUBS).

Exit codes, as `duologue chat`: 0 left politely, 1 anything else, 2 usage, 3 wrong
secret, 4 unknown room, 5 unreachable peer.
"""

import argparse
import sys
import threading
import time

from duologue_session import (EXIT_UNKNOWN_TARGET, EXIT_UNREACHABLE, TYPE_URL_PREFIX, Failure,
                              Session, StreamBroken, add_session_arguments,
                              check_session_arguments, describe, exit_now, load_stubs, log,
                              read_secret, read_stdin)

EXIT_UNKNOWN_ROOM = EXIT_UNKNOWN_TARGET


class ChatSession(Session):
    """The session to a chat room: its messages name the room."""

    noun = "the room"
    # The room makes no calls.
    no_calls = "this chat client answers no calls"

    def unknown_target(self, detail):
        return Failure(f"no room {self.target!r} at {self.args.peer}: {detail}",
                       EXIT_UNKNOWN_ROOM)


# ----------------------------------------------------------------------------------------
# The chat on top of the session.


class Chat:
    def __init__(self, args, chat_pb):
        self.args = args
        self.pb = chat_pb
        self.member_url = TYPE_URL_PREFIX + chat_pb.MemberMessage.DESCRIPTOR.full_name
        self.room_url = TYPE_URL_PREFIX + chat_pb.RoomMessage.DESCRIPTOR.full_name
        self.join_call = 1
        self.welcome = None
        self.join_error = None
        self.sent = 0
        self.acked = 0
        self.fell_behind = None  # the room's FellBehind notice, if it let us go

    def join(self, session):
        message = self.pb.MemberMessage(join=self.pb.Join(user=self.args.user))
        session.queue_call(self.member_url, message.SerializeToString(), self.join_call,
                           int(self.args.timeout * 1000))

    def text(self, session, line):
        self.sent += 1
        message = self.pb.MemberMessage(text=self.pb.Text(client_seq=self.sent, text=line))
        session.queue_cast(self.member_url, message.SerializeToString())

    def deliver(self, envelope):
        """One message from the room, in order."""
        if envelope.reply_to:
            if envelope.reply_to != self.join_call:
                log(f"reply to an unknown call {envelope.reply_to}, ignored")
                return
            if envelope.HasField("fault"):
                self.join_error = f"the join failed: {envelope.fault.code}: {envelope.fault.message}"
                return
        if envelope.type_url != self.room_url:
            log(f"a message of unknown type {envelope.type_url!r}, ignored")
            return
        message = self.pb.RoomMessage()
        message.ParseFromString(envelope.payload)
        kind = message.WhichOneof("kind")
        if envelope.reply_to:
            if kind == "welcome":
                self.welcome = message.welcome
            elif kind == "rejected":
                self.join_error = f"the room refused: {message.rejected.reason}"
            else:
                self.join_error = f"unexpected reply to the join: {kind}"
        elif kind == "relay":
            print(f"{getattr(message.relay, 'from')}: {message.relay.text}", flush=True)
        elif kind == "ack":
            self.acked = max(self.acked, message.ack.client_seq)
        elif kind == "rejected":
            log(f"the room refused: {message.rejected.reason}")
        elif kind == "presence":
            # The room sends the member list once, in the Welcome; each presence names who
            # came or went, and the count.
            p = message.presence
            log(f"* {p.user} {'joined' if p.joined else 'left'} ({p.member_count} members)")
        elif kind == "fell_behind":
            # The room let us go: its Goodbye(FINISHED) follows, and ours must answer it.
            self.fell_behind = message.fell_behind
            log(f"fell behind: {self.behind()}")
        elif self.args.verbose:
            log(f"room message {kind!r} ignored")  # a newer room's message: not ours to read

    def behind(self):
        f = self.fell_behind
        return (f"the room let this member go with {f.queued} messages queued for it; "
                f"relays from room seq {f.missed_from} on were not sent to it; its texts "
                f"after {f.last_client_seq} were not recorded")


def import_stubs(stubs_dir):
    grpc, session_pb2, session_pb2_grpc, (chat_pb2,) = load_stubs(
        stubs_dir, ["duologue.chat.v1.chat_pb2"],
        ["proto/duologue/v1/session.proto", "proto/duologue/chat/v1/chat.proto"])
    return grpc, session_pb2, session_pb2_grpc, chat_pb2


def main(argv=None):
    parser = argparse.ArgumentParser(description="A duologue chat member in Python.")
    parser.add_argument("--peer", required=True, help="the room's node, HOST:PORT")
    parser.add_argument("--room", required=True, help="the room's name")
    parser.add_argument("--user", required=True, help="your name in the room")
    add_session_arguments(parser, "room", "texts",
                          "seconds to wait for the join, and for the last acks (10)")
    args = parser.parse_args(argv)
    check_session_arguments(parser, args)

    session = None
    try:
        grpc, session_pb2, session_pb2_grpc, chat_pb2 = import_stubs(args.stubs)
        secret = read_secret(args.secret_file)
        chat = Chat(args, chat_pb2)
        session = ChatSession(args, secret, grpc, session_pb2, session_pb2_grpc, chat,
                              f"py-{args.user}", args.room)
        try:
            session.handshake(resume=False)
        except StreamBroken as broken:
            raise Failure(f"cannot reach {args.peer}: {broken}", EXIT_UNREACHABLE)

        # JOIN, a call: wait for the envelope that answers it.
        chat.join(session)
        session.flush()
        join_deadline = time.monotonic() + args.timeout

        def joining(kind, _item):
            if kind == "deadline":
                raise Failure(f"no answer to the join within {args.timeout:g}s")
            if kind == "peer_gone":
                raise Failure("the room ended the session before answering the join")
            if chat.join_error:
                raise Failure(chat.join_error)
            return chat.welcome is not None

        session.run(joining, lambda: join_deadline)
        log(f"joined {chat.welcome.room} as {args.user} "
            f"(members: {', '.join(chat.welcome.members)})")
        # What was said before we came: on stderr, so stdout stays the live conversation.
        for line in getattr(chat.welcome, "history", ()):
            log(f"(history) {getattr(line, 'from')}: {line.text}")
        if sys.stdin.isatty():
            log("type a line and press enter to send it; ctrl-d leaves the room")
        threading.Thread(target=read_stdin, args=(session.inbox,), daemon=True).start()

        ack_deadline = [None]

        def talking(kind, item):
            if kind == "line" and session.finishing:
                log(f"not sent, the session is finishing: {item}")
            elif kind == "line":
                chat.text(session, item)
            elif kind == "eof":
                session.finishing = True  # flush() sends the goodbye after what is queued
                ack_deadline[0] = time.monotonic() + args.timeout
            elif kind == "deadline":
                raise Failure(f"the room acked {chat.acked} of {chat.sent} messages "
                              f"within {args.timeout:g}s")
            elif kind == "peer_gone":
                if chat.fell_behind is not None:
                    raise Failure(f"fell behind: {chat.behind()}")
                raise Failure("the room ended its stream before the session closed")
            return session.closed_politely()

        session.run(talking, lambda: ack_deadline[0])
        # Everything is said and acknowledged both ways: end the request stream, and
        # let the room end its response stream.
        error = session.end_stream(args.timeout)
        if error is not None:
            log(f"the room's stream ended with {describe(error)}")
        if chat.fell_behind is not None:
            raise Failure(f"fell behind: {chat.behind()}")
        if chat.acked != chat.sent:
            raise Failure(f"the room acked {chat.acked} of {chat.sent} messages")
        log(f"left {chat.welcome.room}: {chat.sent} messages sent, {chat.acked} acked")
        log(f"flow: sent seq 1..{session.next_seq - 1} on credit up to {session.credit}, "
            f"stopped at the credit {session.credit_stalls} times")
        log(f"byte credit: sent {session.sent_bytes} payload bytes on byte credit up to "
            f"{session.credit_bytes}, asked for more {session.byte_stalls} times")
        session.close()
        return 0
    except Failure as failure:
        log(f"chat_client.py: {failure}")
        if session is not None:
            session.close()
        return failure.code
    except KeyboardInterrupt:
        if session is not None:
            session.close()
        return 130


if __name__ == "__main__":
    # Everything is said and closed; exit without the interpreter's teardown.
    exit_now(main())
