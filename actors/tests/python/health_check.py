"""Asks a duologue node for its health and its protos, with grpcio's own clients.

`cargo test --test python_health` runs it against a real `duologue node`; nothing here is
duologue's: the health stub is `grpcio-health-checking`'s, the descriptors come from the
node through `grpcio-reflection` (v1alpha).

It says what it found on stdout, one line per step, and waits for the node to drain:

    serving                      grpc.health.v1 Check: SERVING for "" and duologue.v1.Duologue
    services: A, B, ...          grpc.reflection: the services the node lists
    method: ...                  Duologue.Converse, resolved through reflection
    message duologue.v1.X: ...   the fields of a message of ours, resolved the same way
    watching                     a Watch stream on "" said SERVING

then, once the node is told to shut down (by whoever started this):

    draining: NOT_SERVING        the Watch said NOT_SERVING, and so did a Check on a new
                                 connection: the server still answers while it drains
    watch ended: CODE            the Watch stream ended (the drain is over)
    stopped: CODE                a Check on a new connection failed (the server is gone)

Any failure goes to stderr and exits 1. Every wait is bounded by --timeout.
"""

import argparse
import queue
import sys
import threading

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DUOLOGUE = "duologue.v1.Duologue"


def fail(message):
    print(f"health_check.py: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def say(line):
    print(line, flush=True)


def status_name(status):
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def check(addr, service, timeout):
    """A Check on a new channel (a new connection)."""
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return reply.status


def expect_status(addr, wanted, timeout):
    for service in ("", DUOLOGUE):
        try:
            status = check(addr, service, timeout)
        except grpc.RpcError as error:
            fail(f"Check({service!r}) failed: {error.code()} {error.details()}")
        if status != wanted:
            fail(f"Check({service!r}) said {status_name(status)}, not {status_name(wanted)}")


def reflect(addr):
    with grpc.insecure_channel(addr) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(database.get_services())
        say("services: " + ", ".join(services))
        pool = DescriptorPool(database)
        service = pool.FindServiceByName(DUOLOGUE)
        method = service.FindMethodByName("Converse")
        streams = lambda flag: "stream " if flag else ""  # noqa: E731
        say(
            f"method: {service.full_name}.{method.name}"
            f"({streams(method.client_streaming)}{method.input_type.full_name})"
            f" returns ({streams(method.server_streaming)}{method.output_type.full_name})"
        )
        # One message of each of our files: session.proto and control.proto.
        for name in ("duologue.v1.Hello", "duologue.v1.MemberList"):
            message = pool.FindMessageTypeByName(name)
            fields = ", ".join(field.name for field in message.fields)
            say(f"message {message.full_name}: {fields}")


def watch(addr, statuses, timeout):
    """Watches "" on its own channel; puts each status, then ("end", code)."""
    channel = grpc.insecure_channel(addr)
    stub = health_pb2_grpc.HealthStub(channel)
    # A bound on the whole stream, so the thread ends even if the node never does.
    stream = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    try:
        for reply in stream:
            statuses.put(reply.status)
        statuses.put(("end", grpc.StatusCode.OK.name))
    except grpc.RpcError as error:
        statuses.put(("end", error.code().name))
    finally:
        channel.close()


def next_item(statuses, timeout, what):
    try:
        return statuses.get(timeout=timeout)
    except queue.Empty:
        fail(f"no {what} within {timeout} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="the node, HOST:PORT")
    parser.add_argument("--timeout", type=float, default=10.0, help="bound of each wait, s")
    args = parser.parse_args()
    addr, timeout = args.addr, args.timeout

    expect_status(addr, SERVING, timeout)
    try:
        check(addr, "no.such.Service", timeout)
        fail("Check of an unknown service succeeded")
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            fail(f"Check of an unknown service: {error.code()}, not NOT_FOUND")
    say("serving")

    reflect(addr)

    statuses = queue.Queue()
    # Long enough for the drain to begin and end after the first answer.
    threading.Thread(target=watch, args=(addr, statuses, 6 * timeout), daemon=True).start()
    first = next_item(statuses, timeout, "first Watch answer")
    if first != SERVING:
        fail(f"Watch began with {first!r}, not SERVING")
    say("watching")

    # Whoever started us now tells the node to shut down; how long that takes is theirs.
    changed = next_item(statuses, 3 * timeout, "Watch answer after SERVING")
    if changed != NOT_SERVING:
        fail(f"Watch said {changed!r} after SERVING, not NOT_SERVING")
    expect_status(addr, NOT_SERVING, timeout)
    say("draining: NOT_SERVING")

    end = next_item(statuses, 3 * timeout, "end of the Watch stream")
    if not (isinstance(end, tuple) and end[0] == "end"):
        fail(f"Watch said {end!r} while the node drained")
    say(f"watch ended: {end[1]}")

    try:
        status = check(addr, "", timeout)
        fail(f"the node still answers after its drain: {status_name(status)}")
    except grpc.RpcError as error:
        say(f"stopped: {error.code().name}")


if __name__ == "__main__":
    main()
