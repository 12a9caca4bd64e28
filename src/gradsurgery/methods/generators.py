"""Per-device random streams owned by a method (reproducible, saved in ``state_dict``)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["DeviceGenerators", "default_seed"]


def default_seed() -> int:
    """``torch.initial_seed()`` (not a draw: the global stream is left untouched), rank 0's under a
    process group of two or more processes (one broadcast), so that every rank draws alike."""
    import torch.distributed as dist

    seed = torch.initial_seed()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        t = torch.tensor([seed % 2**63], dtype=torch.int64, device=device)
        dist.broadcast(t, src=0)
        seed = int(t.item())
    return seed


class DeviceGenerators:
    """A method's own random streams: one ``torch.Generator`` per device, so that draws are made where
    the tensors live (a draw on the CPU then copied to an accelerator would synchronise the host).

    The CPU generator is seeded with ``seed`` (None: ``torch.initial_seed()``, the seed of torch's
    global RNG, read without drawing from it: the user's random stream is left as it is, and a run
    started with ``torch.manual_seed(s)`` is reproducible); under a ``torch.distributed`` process
    group of two or more processes that default is rank 0's ``torch.initial_seed()``, broadcast at
    construction (ranks usually seed their data differently, and every rank must draw the same
    PCGrad orders, RLW weights and GradDrop masks; the broadcast is a collective, so every rank
    must construct its methods in the same order); an accelerator's
    generator is seeded from the CPU one when first used. :meth:`state` / :meth:`load` carry all of
    them (for ``get_extra_state`` / ``set_extra_state``).
    """

    def __init__(self, seed: int | None = None) -> None:
        if seed is None:
            seed = default_seed()
        self.cpu = torch.Generator().manual_seed(seed)
        self._others: dict[str, torch.Generator] = {}

    def get(self, device: torch.device | str) -> torch.Generator:
        device = torch.device(device)
        if device.type == "cpu":
            return self.cpu
        key = str(device)
        if key not in self._others:
            seed = int(torch.randint(0, 2**62, (1,), generator=self.cpu).item())
            self._others[key] = torch.Generator(device=device).manual_seed(seed)
        return self._others[key]

    def state(self) -> dict[str, Any]:
        return {"cpu": self.cpu.get_state(), **{k: g.get_state() for k, g in self._others.items()}}

    def load(self, state: dict[str, Any]) -> None:
        self.cpu.set_state(state["cpu"])
        self._others = {}
        for key, gen_state in state.items():
            if key == "cpu":
                continue
            try:
                gen = torch.Generator(device=torch.device(key))
            except RuntimeError:  # saved on a device this process does not have: start it afresh
                continue
            gen.set_state(gen_state)
            self._others[key] = gen
