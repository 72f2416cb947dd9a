"""Malformed matrices and checkpoint files: a named lyactl error, never numpy's or struct's.

Ragged nested lists (any depth of raggedness) are ShapeErrors naming the argument; any
prefix of a real checkpoint, and random bytes, make ``lyactl_torch.load`` raise a
CheckpointError naming the file.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lyactl.errors import CheckpointError, ShapeError
from lyactl.analysis.systems import NumericSystem, as_square_matrix

rows = st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(M=st.lists(rows, min_size=2, max_size=4).filter(lambda m: len({len(r) for r in m}) > 1))
def test_ragged_matrices_are_shape_errors_naming_the_argument(M):
    with pytest.raises(ShapeError, match="M: expected a rectangular"):
        as_square_matrix(M, "M")


def test_ragged_state_is_a_shape_error():
    sys = NumericSystem(lambda x: 0.5 * x, 2)
    with pytest.raises(ShapeError, match="x0"):
        sys.simulate([[1.0, 2.0], [3.0]], 3)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    torch = pytest.importorskip("torch")
    L = pytest.importorskip("lyactl_torch")
    torch.manual_seed(0)
    model = L.GPT(L.GPTConfig(vocab_size=16, seq_len=8, d_model=16, n_layer=1, n_head=2, head_dim=8))
    path = tmp_path_factory.mktemp("ck") / "ok.pt"
    L.save(path, model, live={}, block_ids=[0])
    return path.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_truncated_or_junk_checkpoints_are_checkpoint_errors(checkpoint_bytes, data, tmp_path):
    import lyactl_torch as L

    blob = data.draw(st.one_of(st.integers(0, len(checkpoint_bytes) - 1).map(lambda n: checkpoint_bytes[:n]),
                               st.binary(max_size=64), st.sampled_from([b"junk", b"abcd", b"\x80\x02", b"PK\x03\x04"])))
    path = tmp_path / "junk_ckpt.pt"
    path.write_bytes(blob)
    with pytest.raises(CheckpointError, match="junk_ckpt.pt"):
        L.load(path)
