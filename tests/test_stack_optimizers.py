"""Each stackable optimizer, stepped over a stack of runs with different hyperparameters, equals torch.optim
stepping each run alone: 100 steps, every slice to 1e-6 of torch's single-tensor update (its documented formula;
the fused CPU kernels a run alone uses round their vector tails differently, by ~2e-6 after 100 steps), and each
run's state_dict the one it would have alone."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from trainrun.config import OptimizerConfig
from trainrun.options.optimizer import make_optimizer
from trainrun.registry import OPTIMIZERS, lazy
from trainrun.stack.optimizers import StackedOptimizer, StackedParam

# per kind, each run's knobs: the stack's runs differ in every numeric knob the kind takes
RUNS = {
    "sgd": [{"lr": 0.1}, {"lr": 0.03, "weight_decay": 0.01}, {"lr": 0.3}],
    "momentum": [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.5, "dampening": 0.1, "weight_decay": 1e-3},
                 {"lr": 0.01, "momentum": 0.99}],
    "nesterov": [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.7, "weight_decay": 1e-2}],
    "adam": [{"lr": 1e-3}, {"lr": 3e-3, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 1e-2}, {"lr": 1e-2}],
    "adamw": [{"lr": 1e-3, "weight_decay": 0.01}, {"lr": 1e-2, "betas": [0.95, 0.9], "weight_decay": 0.1}],
    "rmsprop": [{"lr": 1e-3}, {"lr": 1e-2, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "weight_decay": 1e-3}],
    "adagrad": [{"lr": 0.1}, {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "weight_decay": 1e-3}],
}
VARIANTS = [(kind, runs, {}) for kind, runs in RUNS.items()] + [
    ("adam", RUNS["adam"], {"amsgrad": True}), ("rmsprop", RUNS["rmsprop"], {"centered": True})]


def model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))


def optimizer_for(kind: str, knobs: dict, net: torch.nn.Module, single_tensor: bool = False) -> torch.optim.Optimizer:
    preset = OmegaConf.load(f"conf/optimizer/{kind}.yaml")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(OptimizerConfig), preset, knobs))
    if single_tensor:
        return OPTIMIZERS.create(cfg, list(net.parameters()), foreach=False)
    return make_optimizer(cfg, net, set())  # as a run makes it (fused where torch has a fused kernel)


@pytest.mark.parametrize("kind, runs, shared", VARIANTS, ids=[f"{k}{'-' + next(iter(s)) if s else ''}" for k, _, s in VARIANTS])
def test_a_stacked_step_equals_torch_optim_on_every_slice(kind, runs, shared):
    torch.manual_seed(0)
    start = model()
    alone = [model() for _ in runs]
    stacked = [model() for _ in runs]
    for net in alone + stacked:
        net.load_state_dict(start.state_dict())
    references = [optimizer_for(kind, {**k, **shared}, net, single_tensor=True) for k, net in zip(runs, alone)]
    owners = [optimizer_for(kind, {**k, **shared}, net) for k, net in zip(runs, stacked)]
    params = [StackedParam(torch.stack([p.detach() for p in ps]).requires_grad_(), list(ps))
              for ps in zip(*(net.parameters() for net in stacked))]
    for sp in params:
        sp.alias()
    step = lazy(OPTIMIZERS.trait(kind, "stacked_step"))
    stack = StackedOptimizer(step, params, owners)
    for _ in range(100):
        grads = [torch.randn_like(p) for p in start.parameters()]  # the same gradients for a run and its slice
        for r, (net, opt) in enumerate(zip(alone, references)):
            for p, g in zip(net.parameters(), grads):
                p.grad = g * (r + 1)
            opt.step()
        for sp, g in zip(params, grads):
            sp.data.grad.copy_(torch.stack([g * (r + 1) for r in range(len(runs))]))
        stack.step()
    for r, (net, ours) in enumerate(zip(alone, stacked)):
        for (name, theirs), mine in zip(net.named_parameters(), ours.parameters()):
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6, msg=f"run {r}, {name}")
        want, got = references[r].state_dict(), owners[r].state_dict()
        assert want["state"].keys() == got["state"].keys()
        for index, state in want["state"].items():
            assert state.keys() == got["state"][index].keys()
            for key, value in state.items():
                torch.testing.assert_close(got["state"][index][key].float(), value.float(), rtol=1e-6, atol=1e-6)


def test_a_run_that_leaves_keeps_its_state_and_the_others_step_on_as_alone():
    torch.manual_seed(0)
    start = model()
    nets = [model() for _ in range(3)]
    alone = [model() for _ in range(3)]
    for net in nets + alone:
        net.load_state_dict(start.state_dict())
    runs = RUNS["adam"]
    owners = [optimizer_for("adam", k, net) for k, net in zip(runs, nets)]
    references = [optimizer_for("adam", k, net, single_tensor=True) for k, net in zip(runs, alone)]
    params = [StackedParam(torch.stack([p.detach() for p in ps]).requires_grad_(), list(ps))
              for ps in zip(*(net.parameters() for net in nets))]
    for sp in params:
        sp.alias()
    stack = StackedOptimizer(lazy(OPTIMIZERS.trait("adam", "stacked_step")), params, owners)
    rows = [0, 1, 2]
    for step in range(60):
        if step == 30:  # run 1 leaves: its state becomes its own, the stack goes on with runs 0 and 2
            rows = [0, 2]
            stack.keep([0, 2])
            for sp in params:
                for p in [sp.members[1]]:
                    p.data, p.grad = p.data.clone(), None
                sp.members = [sp.members[0], sp.members[2]]
                sp.data = sp.data.detach()[[0, 2]].clone().requires_grad_()
                sp.alias()
            stack.alias()
        grads = [torch.randn_like(p) for p in start.parameters()]
        for r in rows:
            for p, g in zip(alone[r].parameters(), grads):
                p.grad = g
            references[r].step()
        for sp, g in zip(params, grads):
            sp.data.grad.copy_(torch.stack([g] * len(rows)))
        stack.step()
    for r in (0, 2):
        for mine, theirs in zip(nets[r].parameters(), alone[r].parameters()):
            torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)
    assert owners[1].state_dict()["state"][0]["step"] == 30  # the leaver's state, its own copy, where it left


def test_every_shipped_optimizer_says_whether_it_stacks():
    stacking = {kind for kind in OPTIMIZERS if OPTIMIZERS.trait(kind, "stacked_step")}
    assert stacking == set(RUNS)  # the rest train one run at a time: a test here once they get a stacked step
