#!/usr/bin/env python3
"""Splits a peer's CPU per request by where `perf record -g` found it.

hack/bench-http.sh (PERF=HZ) pipes `perf script -F ip,sym,dso` of one
measured run into

    perfsplit.py PEER SCEN REP HZ RESULT_JSON

and gets one JSON line: microseconds per request by category. Each sample
is 1/HZ seconds of one CPU; the requests are the run's (RESULT_JSON is the
run's line of http-results.jsonl). A sample in the kernel is filed under
the system call its stack entered (ksys_write, __x64_sys_futex, ...; the
softirqs a call runs, such as a loopback write's delivery, are the
call's), else under interrupts, else under other; one in the process under a kind read
off its top frame's symbol: for Go, the runtime's allocation and GC, its
scheduler and system-call entry, the rest of it, maps and hashing, the
peer's own module, its libraries by module, the standard library; for a
C peer, the library it ran in. Names decide, so the split is a guide, not
an account: compare peers and runs with it, not totals.

    perfsplit.py -summary http-perf.jsonl

prints a table per scenario of the medians over repeats.
"""

import collections
import json
import re
import statistics
import sys

SYSCALL = re.compile(r"\b(?:__x64_sys_|__do_sys_|ksys_|__se_sys_)([a-z0-9_]+)")
INTERRUPT = re.compile(r"\b(?:asm_sysvec_|asm_common_interrupt|irqentry_|__sysvec_|handle_softirqs)")
GO_MEM = re.compile(r"malloc|mspan|mcache|mcentral|mheap|heapBits|nextFree|gcDrain|gcBg|gcAssist|gcMark|scanobject|scanObject|"
                    r"scanSpan|greyobject|findObject|tryDefer|sweep|memclr|wbBuf|WriteBarrier|bulkBarrier|spanSet|markBits")
GO_SCHED = re.compile(r"schedule|findRunnable|park|ready|gopark|goready|steal|runq|wakep|netpoll|futex|lock2|unlock2|"
                      r"casgstatus|mcall|gogo|goexit|Gosched|notesleep|notewakeup|stopm|startm|usleep|exitsyscall|"
                      r"entersyscall|reentersyscall|chansend|chanrecv|selectgo|semacquire|semrelease|procyield|osyield|"
                      r"acquirep|releasep|execute|sysmon|retake|Syscall6?$|RawSyscall")
GO_MAP = re.compile(r"^(?:runtime\.map|internal/runtime/maps\.|aeshash|runtime\.strhash|runtime\.memhash)")


def user_kind(sym, dso, module):
    """The kind of a sample in the process, from its top frame."""
    if not dso.endswith(("/" + module, module)) and "." in dso.rsplit("/", 1)[-1]:
        return "lib " + dso.rsplit("/", 1)[-1]  # libc.so.6, libssl.so.3, [vdso]
    if GO_MAP.search(sym):
        return "go maps and hashing"
    if sym.startswith(("runtime.", "internal/runtime/", "syscall.", "internal/poll.")):
        if GO_MEM.search(sym):
            return "go allocation and GC"
        if GO_SCHED.search(sym):
            return "go scheduler and syscall entry"
        return "go runtime, other"
    if sym.startswith("github.com/portmux/portmux/"):
        return "portmux"
    m = re.match(r"^((?:github\.com|golang\.org|go\.uber\.org)/[^/]+/[^/.(]+)", sym)
    if m:
        return m.group(1)
    if re.match(r"^[a-z0-9]+(?:/[a-z0-9]+)*\.", sym) and "/" not in dso.rsplit("/", 1)[-1]:
        return "go standard library"
    return "process " + (dso.rsplit("/", 1)[-1] or "?")


def samples(lines):
    """Yields each sample's frames as (symbol, dso) pairs, top first."""
    frames = []
    for line in lines:
        line = line.strip()
        if not line:
            if frames:
                yield frames
            frames = []
            continue
        m = re.match(r"^[0-9a-f]+\s+(.*?)\s+\((.*)\)$", line)
        if m:
            frames.append((m.group(1), m.group(2)))
    if frames:
        yield frames


def split(peer, scen, rep, hz, result):
    requests = max(json.loads(result)["requests"], 1)
    counts = collections.Counter()
    module = None
    for frames in samples(sys.stdin):
        sym, dso = frames[0]
        if "kernel" in dso:
            # The system call the stack entered, softirqs it ran on the
            # way (a loopback write delivers the packet) included.
            kind = "kernel: other"
            calls = [m.group(1) for m in (SYSCALL.search(s) for s, _ in frames) if m]
            if calls:
                kind = "kernel: " + calls[-1]
            elif any(INTERRUPT.search(s) for s, _ in frames):
                kind = "kernel: interrupts"
        else:
            if module is None:  # the binary: the dso of the bottom frame
                module = frames[-1][1].rsplit("/", 1)[-1]
            kind = user_kind(sym, dso, module)
        counts[kind] += 1
    per = 1e6 / hz / requests
    out = {"peer": peer, "scenario": scen, "rep": rep, "us_per_request": {k: round(v * per, 3) for k, v in counts.items()}}
    out["us_per_request"]["TOTAL"] = round(sum(counts.values()) * per, 3)
    print(json.dumps(out))


def summary(path):
    runs = collections.defaultdict(list)  # (scen, peer) -> [{kind: us}]
    for line in open(path):
        r = json.loads(line)
        runs[r["scenario"], r["peer"]].append(r["us_per_request"])
    for scen in sorted({s for s, _ in runs}):
        peers = sorted(p for s, p in runs if s == scen)
        kinds = sorted({k for p in peers for run in runs[scen, p] for k in run},
                       key=lambda k: (k != "TOTAL", not k.startswith("kernel"), k))
        print(f"\n{scen}: CPU µs per request by where perf found it (medians)\n")
        print("| | " + " | ".join(peers) + " |")
        print("|---" * (len(peers) + 1) + "|")
        for k in kinds:
            cells = [statistics.median(run.get(k, 0) for run in runs[scen, p]) for p in peers]
            if max(cells) < 0.05:
                continue
            print(f"| {k} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["-summary"]:
        summary(sys.argv[2])
    else:
        split(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
