#!/usr/bin/env python3
"""A client of duologue entities written in Python, on grpcio and nothing of duologue's.

It addresses the shopping carts of examples/carts (entities of kind `cart`, hosted by
every `duologue node`) as docs/protocol.md, "Entities: `$entities/KIND`", says any
language may: ONE session to the actor `$entities/KIND` of one node of the cluster, whose
protocol is `duologue.v1.EntityEnvelope->duologue.v1.EntityAnswer`
(proto/duologue/v1/entity.proto). Every message to a cart is an `EntityEnvelope{id,
type_url, payload, hops: 0}` wrapping a `carts.v1.CartRequest`, sent as a call (its answer
is an `EntityAnswer` wrapping a `carts.v1.CartReply`, or a fault) or as a cast; the node
routes each to the member that owns the id's shard, wherever it is. However many carts,
they all share that one session (and, unless it breaks and resumes, one stream). The
session itself, handshake to close, is duologue_session.py's, shared with chat_client.py.

One request a stdin line (words split as a shell does, so `"a b"` is one word):

    call ID add ITEM [N]      call ID remove ITEM [N]      call ID get      call ID checkout
    cast ID add ITEM [N]      (any request as a cast: no answer, only the node's ack)

One line on stdout per answer, in the order answers arrive (calls to different carts may
overtake one another):

    ID: apple x2, pear x1 (on NODE)      what the cart holds, and the node it runs on
    ID: checked out apple x2 (on NODE)   a checkout's answer (the cart is empty after it)
    ID: refused: REASON                  the cart's own refusal (an empty item, 0 of it)
    ID: fault CODE: MESSAGE              the call failed, typed: invalid_id, decode,
                                         entity_start, unplaced, forward_failed, no_reply
    ID: no answer within Ns              no answer within --timeout

At the end of stdin it says goodbye, waits for every answer and for the node's acks of
everything it sent, ends the session, and prints on stderr `closed: C calls (A answered,
F faults, U unanswered) and K casts, to N ids of kind KIND, over 1 session on 1 stream`
(more streams when it had to resume).

    python3 entity_client.py --peer 127.0.0.1:PORT --secret-file cluster.secret \
        --stubs DIR [--kind cart]

DIR holds the stubs generated from the protos (`python -m grpc_tools.protoc -I proto -I
examples/carts/proto --python_out=DIR --grpc_python_out=DIR proto/duologue/v1/session.proto
proto/duologue/v1/entity.proto examples/carts/proto/carts/v1/carts.proto`).

Exit codes: 0 every call answered without a fault and every message acknowledged, 1
anything else, 2 usage, 3 wrong secret, 4 the node hosts no entities of that kind, 5
unreachable, 6 some calls failed (a fault, or no answer in time).
"""

import argparse
import shlex
import threading
import time

from duologue_session import (EXIT_UNKNOWN_TARGET, EXIT_UNREACHABLE, TYPE_URL_PREFIX, Failure,
                              Session, StreamBroken, add_session_arguments,
                              check_session_arguments, describe, exit_now, load_stubs, log,
                              read_secret, read_stdin)

EXIT_CALLS_FAILED = 6
# The reserved name of a node's host of an entity kind, and its protocol.
CARRIER_PREFIX = "$entities/"
ENTITY_PROTOCOL = "duologue.v1.EntityEnvelope->duologue.v1.EntityAnswer"
USAGE = ("call|cast ID add ITEM [N], call|cast ID remove ITEM [N], call|cast ID get, "
         "call|cast ID checkout")


class EntitySession(Session):
    """The session to a node's `$entities/KIND`."""

    noun = "the node"
    # The host of a kind answers; it makes no calls.
    no_calls = "this entity client answers no calls"

    def unknown_target(self, detail):
        kind = self.target[len(CARRIER_PREFIX):]
        return Failure(f"the node at {self.args.peer} hosts no entities of kind {kind!r} "
                       f"({detail})", EXIT_UNKNOWN_TARGET)


class Call:
    """A call in flight: the entity's id and when to stop waiting."""

    def __init__(self, entity, deadline):
        self.entity = entity
        self.deadline = deadline


class Carts:
    """The carts on top of the session: requests in, answers out."""

    def __init__(self, args, entity_pb, carts_pb, decode_error):
        self.args = args
        self.entity_pb = entity_pb
        self.pb = carts_pb
        self.decode_error = decode_error
        self.envelope_url = TYPE_URL_PREFIX + entity_pb.EntityEnvelope.DESCRIPTOR.full_name
        self.answer_url = TYPE_URL_PREFIX + entity_pb.EntityAnswer.DESCRIPTOR.full_name
        self.request_url = TYPE_URL_PREFIX + carts_pb.CartRequest.DESCRIPTOR.full_name
        self.reply_url = TYPE_URL_PREFIX + carts_pb.CartReply.DESCRIPTOR.full_name
        self.next_call = 1
        self.calls = {}  # call_id -> Call, until answered or given up
        self.entities = set()  # every id addressed
        self.sent_calls = self.sent_casts = 0
        self.answered = self.faults = self.unanswered = 0

    def request(self, session, line):
        """Queues the request of one stdin line; False if it cannot be read."""
        try:
            words = shlex.split(line)
        except ValueError as e:
            log(f"cannot read {line!r}: {e}")
            return False
        if not words or words[0].startswith("#"):
            return True
        if len(words) < 3 or words[0] not in ("call", "cast"):
            log(f"cannot read {line!r}: expected {USAGE}")
            return False
        how, entity, verb, rest = words[0], words[1], words[2], words[3:]
        pb = self.pb
        try:
            if verb in ("add", "remove") and len(rest) in (1, 2):
                quantity = int(rest[1]) if len(rest) == 2 else 1
                if not 0 <= quantity < 2 ** 32:
                    raise ValueError(f"{quantity} is not a quantity")
                line_of = pb.Add if verb == "add" else pb.Remove
                message = pb.CartRequest(**{verb: line_of(item=rest[0], quantity=quantity)})
            elif verb == "get" and not rest:
                message = pb.CartRequest(get=pb.Get())
            elif verb == "checkout" and not rest:
                message = pb.CartRequest(checkout=pb.Checkout())
            else:
                raise ValueError(f"expected {USAGE}")
        except ValueError as e:
            log(f"cannot read {line!r}: {e}")
            return False
        # The id goes as it is: the node, not this client, says which ids it takes.
        envelope = self.entity_pb.EntityEnvelope(id=entity, type_url=self.request_url,
                                                 payload=message.SerializeToString(), hops=0)
        payload = envelope.SerializeToString()
        self.entities.add(entity)
        if how == "cast":
            self.sent_casts += 1
            session.queue_cast(self.envelope_url, payload)
        else:
            self.sent_calls += 1
            call_id, self.next_call = self.next_call, self.next_call + 1
            self.calls[call_id] = Call(entity, time.monotonic() + self.args.timeout)
            session.queue_call(self.envelope_url, payload, call_id,
                               int(self.args.timeout * 1000))
        return True

    def deliver(self, envelope):
        """One envelope from the node: the answer to one of our calls."""
        if not envelope.reply_to:
            log(f"a message that answers no call ({envelope.type_url!r}), ignored")
            return
        call = self.calls.pop(envelope.reply_to, None)
        if call is None:
            # Given up on already (its line is printed), or never made.
            log(f"an answer to call {envelope.reply_to}, which waits no more, ignored")
            return
        entity = call.entity
        if envelope.HasField("fault"):
            self.faults += 1
            self.say(entity, f"fault {envelope.fault.code}: {envelope.fault.message}")
            return
        self.answered += 1
        if envelope.type_url != self.answer_url:
            self.say(entity, f"an answer of another type, {envelope.type_url!r}")
            return
        try:
            answer = self.entity_pb.EntityAnswer.FromString(envelope.payload)
            if answer.type_url != self.reply_url:
                self.say(entity, f"a reply of another type, {answer.type_url!r}")
                return
            reply = self.pb.CartReply.FromString(answer.payload)
        except self.decode_error as e:
            self.say(entity, f"an answer that does not decode: {e}")
            return
        kind = reply.WhichOneof("kind")
        if kind == "contents":
            self.say(entity, contents(reply.contents))
        elif kind == "refused":
            self.say(entity, f"refused: {reply.refused.reason}")
        else:
            self.say(entity, f"a reply this client does not know ({kind})")

    def say(self, entity, text):
        print(f"{shlex.quote(entity)}: {text}", flush=True)

    def next_deadline(self):
        return min((call.deadline for call in self.calls.values()), default=None)

    def give_up_late(self, now):
        """Calls whose answer is overdue: printed as such, and no longer waited for."""
        for call_id, call in list(self.calls.items()):
            if call.deadline <= now:
                del self.calls[call_id]
                self.unanswered += 1
                self.say(call.entity, f"no answer within {self.args.timeout:g}s")


def contents(held):
    """`apple x2, pear x1 (on NODE)`, as the Rust carts client says it (`carts::describe`)."""
    lines = ", ".join(f"{line.item} x{line.quantity}" for line in held.lines) or "(empty)"
    checkout = "checked out " if held.checked_out else ""
    return f"{checkout}{lines} (on {held.node})"


def import_stubs(stubs_dir):
    grpc, session_pb2, session_pb2_grpc, (entity_pb2, carts_pb2) = load_stubs(
        stubs_dir, ["duologue.v1.entity_pb2", "carts.v1.carts_pb2"],
        ["proto/duologue/v1/session.proto", "proto/duologue/v1/entity.proto",
         "-I examples/carts/proto examples/carts/proto/carts/v1/carts.proto"])
    from google.protobuf.message import DecodeError
    return grpc, session_pb2, session_pb2_grpc, entity_pb2, carts_pb2, DecodeError


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="A client of duologue entities (shopping carts) in Python.")
    parser.add_argument("--peer", required=True, help="a node hosting the kind, HOST:PORT")
    parser.add_argument("--kind", default="cart", help="the entity kind (cart)")
    parser.add_argument("--name", default="py-entities",
                        help="this client's name in the handshake (py-entities)")
    add_session_arguments(parser, "node", "messages",
                          "seconds to wait for each answer, and for the last acks (10)")
    args = parser.parse_args(argv)
    check_session_arguments(parser, args)

    session = None
    try:
        grpc, session_pb2, session_pb2_grpc, entity_pb2, carts_pb2, decode_error = \
            import_stubs(args.stubs)
        secret = read_secret(args.secret_file)
        carts = Carts(args, entity_pb2, carts_pb2, decode_error)
        session = EntitySession(args, secret, grpc, session_pb2, session_pb2_grpc, carts,
                                args.name, CARRIER_PREFIX + args.kind, ENTITY_PROTOCOL)
        try:
            session.handshake(resume=False)
        except StreamBroken as broken:
            raise Failure(f"cannot reach {args.peer}: {broken}", EXIT_UNREACHABLE)
        log(f"connected to {session.peer.name} at {args.peer}: entities of kind {args.kind}")
        threading.Thread(target=read_stdin, args=(session.inbox,), daemon=True).start()

        ack_deadline = [None]

        def deadline():
            return min((t for t in (carts.next_deadline(), ack_deadline[0]) if t is not None),
                       default=None)

        def talking(kind, item):
            if kind == "line" and session.finishing:
                log(f"not sent, the session is finishing: {item}")
            elif kind == "line":
                carts.request(session, item)
            elif kind == "eof":
                session.finishing = True  # flush() sends the goodbye after what is queued
            elif kind == "deadline":
                now = time.monotonic()
                carts.give_up_late(now)
                if ack_deadline[0] is not None and now >= ack_deadline[0]:
                    raise Failure(f"the node did not acknowledge every message within "
                                  f"{args.timeout:g}s of the last answer")
            elif kind == "peer_gone":
                raise Failure("the node ended its stream before the session closed")
            if not session.finishing or carts.calls:
                return False
            # Every answer is in (or given up on): what is left is the node's acks.
            if ack_deadline[0] is None:
                ack_deadline[0] = time.monotonic() + args.timeout
            return settled(session)

        session.run(talking, deadline)
        if session.peer_goodbye is None:
            # The host of a kind does not finish its half of the session (it answers; it
            # never says it is done), so a polite close would wait for good. Everything
            # is answered and acknowledged both ways: end the session as a Rust client's
            # node does when it stops (its carriers end with NODE_SHUTDOWN), a second,
            # different goodbye, which ends it at once with nothing unconfirmed.
            session.write(session.pb.Frame(goodbye=session.pb.Goodbye(
                reason=session.pb.GOODBYE_REASON_NODE_SHUTDOWN,
                detail="the client is done: every call answered, every message acknowledged",
                last_seq=session.next_seq - 1)))
        # End the request stream, and let the node end its response stream.
        error = session.end_stream(args.timeout)
        if error is not None:
            log(f"the node's stream ended with {describe(error)}")
        streams = "1 stream" if session.epoch == 1 else f"{session.epoch} streams"
        log(f"closed: {carts.sent_calls} calls ({carts.answered} answered, {carts.faults} "
            f"faults, {carts.unanswered} unanswered) and {carts.sent_casts} casts, to "
            f"{len(carts.entities)} ids of kind {args.kind}, over 1 session on {streams}")
        log(f"flow: sent seq 1..{session.next_seq - 1} on credit up to {session.credit}, "
            f"stopped at the credit {session.credit_stalls} times")
        session.close()
        return EXIT_CALLS_FAILED if carts.faults or carts.unanswered else 0
    except Failure as failure:
        log(f"entity_client.py: {failure}")
        if session is not None:
            session.close()
        return failure.code
    except KeyboardInterrupt:
        if session is not None:
            session.close()
        return 130


def settled(session):
    """Our goodbye is out, everything we sent acknowledged, everything received delivered
    and acked (the node's own goodbye, if it sends one, was received too: a goodbye names
    the last envelope before it)."""
    return (session.goodbye is not None and not session.pending and not session.replies
            and not session.in_flight and session.delivered == session.received
            and session.ack_sent == session.delivered)


if __name__ == "__main__":
    # Everything is said and closed; exit without the interpreter's teardown.
    exit_now(main())
