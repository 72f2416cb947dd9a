"""Trainer integrations: a tiny HF Trainer run and a tiny Lightning run, each applying an
event from a scripted controller and training on; absent-dependency paths."""

import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lyactl.errors import InvalidArgumentError  # noqa: E402
from lyactl.control.groups import Action, Decision, Event  # noqa: E402

import lyactl_torch as L  # noqa: E402
from lyactl_torch import integrations as I  # noqa: E402
from scripted import Out  # noqa: E402





class Scripted:
    """Report 1 answers with a PRUNE event of ``names``; later reports with nothing."""

    def __init__(self, backend, names):
        self.backend, self.names, self.seen = backend, names, []

    def observe(self, stats):
        self.seen.append(stats)
        if len(self.seen) != 1:
            return Out()
        idx = self.backend.layout.index
        return Out(events=(Event(0, stats.step, tuple(Decision(stats.step, n, idx[n], Action.PRUNE) for n in self.names)),))


def factory(names, made):
    def make(backend):
        made.append(Scripted(backend, names))
        return made[-1]
    return make


def _check_run(ctl, made, n_steps):
    ctl_obj = made[0]
    assert len(ctl.events) == 1 and ctl.backend.step == n_steps
    assert len(ctl_obj.seen) == n_steps // ctl.interval
    for st in ctl_obj.seen:
        assert math.isfinite(st.loss) and st.loss > 0
        live = ~np.asarray(ctl.backend.layout.pruned_mask())
        assert np.isfinite(st.g_sq[live]).all()  # the step ran while gradients existed


# ---- Hugging Face Trainer --------------------------------------------------------------
def test_hf_trainer_applies_event_and_trains_on(tmp_path):
    T = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    T.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=41, n_positions=16, n_embd=64, n_layer=3, n_head=4, n_inner=128,
                                           bos_token_id=0, eos_token_id=0))
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": x, "labels": x} for x in torch.randint(0, 41, (32, 16), generator=g)]
    args = T.TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                               max_steps=6, learning_rate=1e-3, report_to=[], logging_steps=1, save_strategy="no",
                               use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    made = []
    cb = I.LyactlCallback(factory(["blocks.0.attn.head.1", "blocks.2", "blocks.1.mlp.block.0"], made), interval=2)
    trainer = T.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb])
    result = trainer.train()
    ctl = cb.driver.ctl
    assert result.global_step == 6 and math.isfinite(result.training_loss)
    assert ctl.backend.optimizer is I.unwrap_optimizer(trainer.optimizer)  # kept, state sliced in place
    _check_run(ctl, made, 6)
    assert len(model.transformer.h) == 2 and model.transformer.h[0].attn.num_heads == 3
    assert model.transformer.h[1].mlp.c_fc.weight.shape[1] == 64
    # loss seen by the controller: mean of the 2 micro-batch losses of that step (forward hook)
    assert made[0].seen[0].loss == pytest.approx(trainer.state.log_history[1]["loss"], rel=1e-4)


# ---- Lightning -------------------------------------------------------------------------
def test_lightning_applies_event_and_trains_on():
    pl = pytest.importorskip("lightning.pytorch")

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.gpt = L.GPT(L.GPTConfig(vocab_size=41, seq_len=16, d_model=64, n_layer=3, n_head=2, head_dim=32,
                                         mlp_hidden=128))

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self.gpt(x[:, :-1], x[:, 1:])[1]

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randint(0, 41, (32, 17), generator=g)),
                                         batch_size=2)
    made = []
    cb = I.LyactlLightningCallback(factory(["blocks.1.attn.head.0", "blocks.0.mlp.block.1", "blocks.2"], made), interval=2)
    module = Module()
    trainer = pl.Trainer(max_steps=6, accumulate_grad_batches=2, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[cb])
    trainer.fit(module, loader)
    ctl = cb.driver.ctl
    assert trainer.global_step == 6 and ctl.backend.model is module.gpt
    _check_run(ctl, made, 6)
    assert [s.n_head for s in module.gpt.shapes()] == [2, 1] and module.gpt.shapes()[0].mlp_hidden == 64
    assert ctl.backend.optimizer is trainer.optimizers[0]


# ---- driver and absent dependencies ----------------------------------------------------
def test_driver_averages_micro_batch_losses_and_validates():
    model = L.GPT(L.GPTConfig(vocab_size=11, seq_len=8, d_model=64, n_layer=1, n_head=2, head_dim=32))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    made = []
    d = I.LyactlDriver(factory([], made), interval=1)
    with pytest.raises(InvalidArgumentError, match="ensure"):
        d.optimizer_step()
    d.ensure(model, opt)
    d.add_loss(torch.tensor(1.0))
    d.add_loss(3.0)
    x = torch.randint(0, 11, (2, 8))
    model(x, x)[1].backward()
    d.optimizer_step()
    assert made[0].seen[0].loss == pytest.approx(2.0)  # mean of micro-batch means
    d.add_loss(torch.tensor(0.5), partial=True)
    d.add_loss(torch.tensor(1.25), partial=True)
    d.optimizer_step()
    assert made[0].seen[1].loss == pytest.approx(1.75)  # sum of shares
    d.optimizer_step()  # no loss and no fallback: NaN reaches the controller (it holds)
    assert math.isnan(made[0].seen[2].loss)
    with pytest.raises(InvalidArgumentError, match="interval"):
        I.LyactlDriver(factory([], made), interval=0)
    with pytest.raises(InvalidArgumentError, match="optimizer"):
        I.unwrap_optimizer(object())


@pytest.mark.parametrize("name, make", [("transformers", I.LyactlCallback), ("lightning", I.LyactlLightningCallback)])
def test_absent_dependency_raises_import_error(monkeypatch, name, make):
    monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, f"{name}.pytorch", None)
    with pytest.raises(ImportError, match=name):
        make(lambda b: None, 10)


def test_a_ramped_budget_reaches_the_controller():
    """``controller.ramp_end_frac`` in a run config becomes the budget's ramp (steps)."""
    import dataclasses

    from lyactl.app.runconfig import ControllerSection, RunConfig
    from lyactl_torch import Lyactl
    from lyactl_torch.runner import build_controller, build_model

    cfg = RunConfig()
    cfg = dataclasses.replace(cfg, controller=dataclasses.replace(ControllerSection(), warmup_frac=0.1,
                                                                    ramp_end_frac=0.4, last_frac=0.8))
    model = build_model(cfg, 128)
    loop = Lyactl(model, torch.optim.AdamW(model.parameters()), None, interval=cfg.controller.interval)
    b = build_controller(cfg, loop).config.budget
    T = cfg.training.steps
    assert (b.ramp_start, b.ramp_end) == (int(0.1 * T), int(0.4 * T)) and b.target == cfg.controller.budget
