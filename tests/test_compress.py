"""``lyactl compress``: a tiny trained GPT checkpoint is pruned to its FLOPs target while training
continues and saved with the smaller shapes; distillation counts the teacher; a uniformly
compressed Hugging Face Llama exports to a directory ``from_pretrained`` loads with identical
logits; bad input exits 2 naming the argument."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from lyactl.app.cli import main  # noqa: E402
from lyactl.app.runfolder import audit  # noqa: E402
from lyactl.control.decision_log import read_log, reverify  # noqa: E402
from lyactl_torch.checkpoint import load, save  # noqa: E402
from lyactl_torch.compress import CompressConfig, compress, logits  # noqa: E402
from lyactl_torch.corpus import Batches  # noqa: E402
from lyactl_torch.flops import flops_per_token, model_flops_per_token  # noqa: E402
from lyactl_torch.groups import Layout, adapter_for  # noqa: E402
from lyactl_torch.model import GPT, GPTConfig  # noqa: E402

SEQ, BATCH = 32, 8


def stream(n=20000, vocab=300, seed=0):
    """A learnable token stream: a fixed cycle with random single-bit noise."""
    rng = np.random.default_rng(seed)
    return ((np.arange(n) * 7 % vocab) ^ rng.integers(0, 2, n)).astype(np.int32)


def tiny_gpt(steps=5):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, seq_len=SEQ, d_model=64, n_layer=2, n_head=4, head_dim=16, mlp_hidden=128))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    b = Batches(stream(), SEQ, BATCH, 1)
    for step in range(steps):
        xy = torch.from_numpy(b.batch(step))
        model(xy[:, :-1], xy[:, 1:])[1].backward()
        opt.step()
        opt.zero_grad()
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = tiny_gpt()
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    lay = Layout(model, adapter_for(model), 16)
    save(path, model, live=lay.live, block_ids=lay.block_ids, block=16)
    return path, model_flops_per_token(model)


def test_cli_compresses_a_gpt_checkpoint_to_the_target(checkpoint, tmp_path, capsys):
    path, fpt0 = checkpoint
    out = tmp_path / "run"
    rc = main(["compress", str(path), "--target-flops", "0.6", "--tokens", str(60 * SEQ * BATCH), "--out", str(out),
               "--no-progress", "--seq-len", str(SEQ), "--batch-size", str(BATCH), "--block", "16"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    summary = json.loads((out / "summary.json").read_text())["arms"][0]
    small = load(out / "compressed.pt").model
    fpt1 = flops_per_token(adapter_for(small).cost(small))  # every block priced trainable: the size reached
    assert fpt1 <= 0.6 * fpt0 and summary["flops_per_token_ratio"] == pytest.approx(fpt1 / fpt0)
    original = load(path).model
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in original.parameters())
    assert [s for s in small.shapes()] != [s for s in original.shapes()] or small.d_live < original.d_live
    assert summary["events"] and all(m for e in summary["events"] for m in e["monitors"])  # every decision certified
    assert audit(out) == ()  # manifest intact, every summary event has its decisions in the log
    assert reverify(out / "decisions.jsonl").ok  # every certificate (settled freezes included) re-verifies
    freezes = [r for r in read_log(out / "decisions.jsonl") if r.get("type") == "decision" and r["action"] == "freeze"]
    for r in freezes:  # a freeze carries the settled certificate or the built-in pair
        kinds = {c["monitor"] for c in r["certificates"]}
        assert kinds in ({"settled"}, {"convergence", "movement"}, {"settled", "convergence", "movement"}), kinds
    assert np.isfinite(summary["val_bpb_before"]) and np.isfinite(summary["val_bpb_after"])
    assert "FLOPs/token" in printed and "certificates:" in printed and "lyactl's GPT format" in printed
    assert main(["report", str(out)]) == 0 and "compress, method lyactl" in capsys.readouterr().out


def test_cli_measured_method_logs_every_decision_and_only_harmless_ones_reverify(checkpoint, tmp_path, capsys):
    path, fpt0 = checkpoint
    out = tmp_path / "measured"
    rc = main(["compress", str(path), "--target-flops", "0.5", "--tokens", str(40 * SEQ * BATCH), "--out", str(out),
               "--no-progress", "--seq-len", str(SEQ), "--batch-size", str(BATCH), "--block", "16",
               "--method", "measured", "--rounds", "2"])
    assert rc == 0, capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())["arms"][0]
    assert summary["reached_target"] and len(summary["rounds"]) == 2
    assert summary["measure_flops"] > 0 and summary["train_flops"] > summary["student_flops"] + summary["measure_flops"] - 1
    decisions = [r for r in read_log(out / "decisions.jsonl") if r.get("type") == "decision"]
    assert len(decisions) == sum(len(e["groups"]) for e in summary["events"]) > 0  # every decision is logged
    unknown = {r["group"] for r in decisions if r["certificates"][0]["verdict"] != "holds"}
    report = reverify(out / "decisions.jsonl")
    assert {f[1] for f in report.failures} == unknown  # exactly the budget-forced removals fail to re-verify
    for r in decisions:
        n = r["certificates"][0]["numbers"]
        assert (n["tol"] > n["upper"]) == (r["certificates"][0]["verdict"] == "holds")
    capsys.readouterr()
    rc = main(["report", str(out)])  # the offline report reads a compress folder and says the same
    printed = capsys.readouterr().out
    assert rc == (1 if unknown else 0) and "compress, method measured" in printed
    assert f"{len(decisions)} certificates of {len(decisions)} decisions" in printed


def test_distillation_kl_is_finite_and_the_teacher_is_counted():
    model = tiny_gpt()
    n_teacher = sum(p.numel() for p in model.parameters())
    cfg = CompressConfig(0.6, 12 * SEQ * BATCH, method="oneshot", batch_size=BATCH, seq_len=SEQ, block=16, distill=2.0)
    r = compress(model, Batches(stream(), SEQ, BATCH, 2), cfg).record
    assert np.isfinite(r["kl_last"]) and r["kl_last"] >= 0
    assert r["teacher_flops"] == 2.0 * n_teacher * r["tokens"]
    assert r["train_flops"] == pytest.approx(r["student_flops"] + r["teacher_flops"])
    assert r["flops_per_token_ratio"] <= 0.6


def test_kl_of_identical_logits_is_zero():
    from lyactl_torch.compress import _distill_kl

    z = torch.randn(2, 5, 11)
    assert float(_distill_kl(z, z, 3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(_distill_kl(z, torch.randn(2, 5, 11), 3.0)) > 0


def test_uniform_llama_exports_and_reloads_with_identical_logits(tmp_path):
    T = pytest.importorskip("transformers")
    from lyactl_torch.compress_run import run_compress
    from lyactl_torch.runner import DEMO_CORPUS_DIR

    T.logging.set_verbosity_error()
    torch.manual_seed(3)
    cfg = T.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    T.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    ccfg = CompressConfig(0.6, 10 * SEQ * BATCH, method="oneshot", batch_size=BATCH, seq_len=SEQ, block=16,
                          uniform=True)
    rec = run_compress(tmp_path / "llama", ccfg, corpus=DEMO_CORPUS_DIR, out=tmp_path / "run", progress=False,
                       val_docs=2)
    assert rec["reached_target"] and rec["flops_per_token_ratio"] <= 0.6
    from lyactl_torch.compress_run import format_summary

    assert "reached" in format_summary(rec) and f"{rec['frozen_blocks']} frozen block(s)" in format_summary(rec)
    loaded = T.AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "hf", local_files_only=True).eval()
    assert loaded.config.intermediate_size < 128 or loaded.config.num_key_value_heads < 2
    # the same compression through the Python API, then export: from_pretrained gives its logits
    from lyactl_torch.hf_checkpoint import export_pretrained

    model = T.AutoModelForCausalLM.from_pretrained(tmp_path / "llama", local_files_only=True)
    result = compress(model, Batches(stream(vocab=320), SEQ, BATCH, 0), ccfg)
    export_pretrained(result.model.cpu(), tmp_path / "api")
    theirs = T.AutoModelForCausalLM.from_pretrained(tmp_path / "api", local_files_only=True).eval()
    assert sum(p.numel() for p in theirs.parameters()) < sum(p.numel() for p in T.LlamaForCausalLM(cfg).parameters())
    x = torch.randint(0, 320, (2, 9))
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, logits(result.model, x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("argv, name", [
    (["missing.pt", "--target-flops", "0.5", "--tokens", "10"], "CHECKPOINT"),
    (["{ckpt}", "--target-flops", "1.5", "--tokens", "10"], "--target-flops"),
    (["{ckpt}", "--target-flops", "0", "--tokens", "10"], "--target-flops"),
    (["{ckpt}", "--target-flops", "0.5", "--tokens", "0"], "--tokens"),
])
def test_bad_input_exits_2_naming_the_argument(argv, name, checkpoint, tmp_path, capsys):
    argv = [a.format(ckpt=checkpoint[0]) for a in argv]
    rc = main(["compress", *argv, "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert name in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written on bad input
