"""What a latent / switch request needs to resume exactly after SGLang retracts it (or preempts
it by priority): its state machine as it was, and the input each of its positions had.

SGLang frees a retracted request's KV and later prefills it again from prompt + output token
ids. A position that was fed a soft input (the mixture) would be recomputed from the sampled
token's embedding, and the request's reasoning state would start over. So every step, after the
step kernels, the stepping rows' whole state (`DeviceStep.state_rows`, [R, K] int32) and their
published next inputs ([R, H]) are copied to host memory: asynchronously, on a side stream into
pinned staging, with an event (no host wait in decode). Each batch's admission files the copies
that are done under their request's `Trajectory` (`drain`); a re-admitted request waits for its
own (`drain(wait=True)`, once, on the prefill that resumes it).

A trajectory keeps, per request:
- the last few whole states (a retracted request resumes from the one after its last committed
  token; under SGLang's overlap scheduler the device may have stepped one token further, which
  SGLang drops);
- each step's mode (one byte), for the response's per-step modes;
- the soft input of each latent step, while the rank's journal stays within its bound
  (`RIO_RESUME_MEMORY_MIB`, `rio-sglang serve --resume-memory-mib`). Past it, the request drops
  its soft inputs (`lost`) and, if retracted, resumes from tokens (`resumed_from_tokens`).

A request's trajectory lives on its record (`record.py`) and is freed when it finishes or is
aborted. SGLang-free.
"""

from __future__ import annotations

import logging
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rio_kernels.swir_step.layout import INT_COL

log = logging.getLogger(__name__)
C_STEP, C_LATENT = INT_COL["step"], INT_COL["latent_steps"]
KEEP_STATES = 4  # whole states a trajectory keeps (the newest): resumption needs the last two


@dataclass(eq=False)
class Trajectory:
    """One request's steps so far (k: the step, 0 for the token its prompt's prefill samples)."""

    states: dict[int, torch.Tensor] = field(default_factory=dict)  # k -> [K] int32, newest few
    soft: dict[int, torch.Tensor] = field(default_factory=dict)  # k -> [H]: step k's soft input
    modes: bytearray = field(default_factory=bytearray)  # k -> 1 latent, 0 explicit
    latent_count: int = 0  # latent steps among `modes`
    soft_bytes: int = 0
    lost: bool = False  # a soft input was not kept (the bound, or none kept on this rank)

    @property
    def steps(self) -> int:
        return len(self.modes)

    def truncate(self, steps: int) -> int:
        """Forget steps >= `steps` (the device ran ahead of what SGLang committed); returns the
        bytes freed."""
        freed = 0
        for k in [k for k in self.soft if k >= steps]:
            freed += _nbytes(self.soft.pop(k))
        for k in [k for k in self.states if k >= steps]:
            del self.states[k]
        del self.modes[steps:]
        self.latent_count = sum(self.modes)
        self.soft_bytes -= freed
        return freed


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class _Staged:
    records: tuple  # the rows' records (record.py)
    states: torch.Tensor  # [R, K] int32 host (pinned on a GPU)
    pending: torch.Tensor | None  # [R, H] host
    event: object | None  # torch.cuda.Event: the copies are done


class Journal:
    """One rank's trajectories' staging and their memory bound (bytes of soft inputs).
    keep_soft False (the rank does not embed: a PP last stage): states and modes only."""

    def __init__(self, device: torch.device | str, bound_bytes: int, keep_soft: bool = True):
        self.device = torch.device(device)
        self.bound = max(0, int(bound_bytes))
        self.keep_soft = keep_soft
        self.used = 0  # bytes of soft inputs held by live trajectories
        self._queue: deque[_Staged] = deque()
        self._live: weakref.WeakSet[Trajectory] = weakref.WeakSet()
        self._side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    @property
    def keeps_inputs(self) -> bool:
        """Whether `capture` wants the rows' next inputs (a bound above zero, a rank that
        embeds): else none are copied and every retracted request resumes from tokens."""
        return self.keep_soft and self.bound > 0

    def capture(self, records: Sequence, states: torch.Tensor,
                pending: torch.Tensor | None) -> None:
        """This step's rows (`records`, in row order): states [R, K] int32 and next inputs
        [R, H], fresh device tensors. Launches the host copies; never waits."""
        if not self.keeps_inputs:
            pending = None
        if self._side is None:  # CPU: the tensors are host memory already
            self._file(tuple(records), states, pending)
            return
        main = torch.cuda.current_stream(self.device)
        self._side.wait_stream(main)
        with torch.cuda.stream(self._side):
            host_states = torch.empty(states.shape, dtype=states.dtype, pin_memory=True)
            host_states.copy_(states, non_blocking=True)
            host_pending = None
            if pending is not None:
                host_pending = torch.empty(pending.shape, dtype=pending.dtype, pin_memory=True)
                host_pending.copy_(pending, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._side)
        states.record_stream(self._side)
        if pending is not None:
            pending.record_stream(self._side)
        self._queue.append(_Staged(tuple(records), host_states, host_pending, event))

    def drain(self, wait: bool = False) -> None:
        """File the copies that are done (all of them, waiting, with `wait`)."""
        while self._queue:
            staged = self._queue[0]
            if staged.event is not None and not staged.event.query():
                if not wait:
                    return
                staged.event.synchronize()
            self._queue.popleft()
            self._file(staged.records, staged.states, staged.pending)

    def _file(self, records: tuple, states: torch.Tensor, pending: torch.Tensor | None) -> None:
        states = states.cpu()
        steps = states[:, C_STEP].tolist()
        latent = states[:, C_LATENT].tolist()
        use = states[:, -1].tolist()
        for r, record in enumerate(records):
            if record.closed:
                continue
            traj = record.trajectory
            if traj is None:
                traj = record.trajectory = Trajectory()
                self._live.add(traj)
            k = steps[r] - 1  # the step this row took (its counter counts steps taken)
            if k < traj.steps:  # a row past its answer budget only emits: no new step
                continue
            if k > traj.steps:  # not every step was seen (cannot happen in stream order)
                traj.lost = True
            traj.modes.extend(b"\0" * (k - traj.steps))
            mode = max(0, min(1, latent[r] - traj.latent_count))
            traj.modes.append(mode)
            traj.latent_count = latent[r]
            traj.states[k] = states[r].clone()
            for old in [o for o in traj.states if o <= k - KEEP_STATES]:
                del traj.states[old]
            if use[r]:
                self._keep_soft(traj, k, None if pending is None else pending[r])

    def _keep_soft(self, traj: Trajectory, k: int, row: torch.Tensor | None) -> None:
        if row is None or traj.lost:
            traj.lost = True
            return
        size = _nbytes(row)
        if self.used + size > self.bound:
            self._recount()
        if self.used + size > self.bound:
            traj.lost = True  # from here on this request would resume from tokens
            self.used -= traj.soft_bytes
            traj.soft.clear()
            traj.soft_bytes = 0
            return
        traj.soft[k] = row.clone()
        traj.soft_bytes += size
        self.used += size

    def _recount(self) -> None:
        """Trajectories of requests SGLang dropped without finishing them free their bytes."""
        self.used = sum(t.soft_bytes for t in self._live)

    def forget(self, record) -> None:
        """A finished or aborted request's trajectory goes (its records' staged rows are
        skipped when filed)."""
        traj, record.trajectory = record.trajectory, None
        if traj is not None:
            self.used -= traj.soft_bytes
            self._live.discard(traj)

    def resume_point(self, record, committed: int) -> tuple[torch.Tensor, torch.Tensor | None,
                                                            bytes] | None:
        """A retracted request, `committed` output tokens kept by SGLang, is prefilled again:
        (its state after step committed - 1, that step's soft input or None, its modes), its
        later steps forgotten; None if its state was not kept (it starts over)."""
        self.drain(wait=True)
        traj = record.trajectory
        if traj is None or committed < 1 or (committed - 1) not in traj.states:
            return None
        self.used -= traj.truncate(committed)
        k = committed - 1
        return traj.states[k], traj.soft.get(k), bytes(traj.modes)

    def soft_inputs(self, record) -> dict[int, torch.Tensor]:
        """{output index (0: the first output token's): its soft input} of every latent step
        kept (after `resume_point`, those of the committed tokens)."""
        traj = record.trajectory
        return {} if traj is None else dict(traj.soft)
