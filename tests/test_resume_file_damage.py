"""A damaged snapshot side file (.solverstate.rng.json) restores exactly or refuses in one line
naming the file and the member, and never half-restores (issue #16): the fuzz campaign found
a list, a null member, another generator and negative counts ending in internal errors."""
import json
import os

import pytest

from caffe_lite import common
from caffe_lite.errors import CaffeError
from caffe_lite.solvers import get_solver
from caffe_lite.solvers import snapshot as snapshot_mod
from test_solver_features import LMDB_DATA, params_of, write_case

pytestmark = pytest.mark.usefixtures("restore_glog")


def damage(data, case):
    data = json.loads(json.dumps(data))
    layer = next(iter(data["train_net"]))
    edits = {
        "a list": lambda: [1, 2],
        "a string iter": lambda: dict(data, iter="3"),
        "a null rng": lambda: dict(data, rng=None),
        "another generator": lambda: dict(data, rng=dict(data["rng"], bit_generator="MT19937")),
        "a negative rng state": lambda: dict(data, rng=dict(data["rng"],
                                                           state={"inc": -5, "state": -7})),
        "null hooks": lambda: dict(data, hooks=None),
        "a list of layers": lambda: dict(data, train_net=[1]),
        "a negative batch index": lambda: dict(data, train_net={
            layer: dict(data["train_net"][layer], batch_index=-4)}),
        "a float seed": lambda: dict(data, train_net={
            layer: dict(data["train_net"][layer], seed=1.5)}),
    }
    return edits[case]()


CASES = ["a list", "a string iter", "a null rng", "another generator", "a negative rng state",
         "null hooks", "a list of layers", "a negative batch index", "a float seed"]


@pytest.mark.parametrize("case", CASES)
def test_damaged_side_file_refuses_and_restores_nothing(tmp_path, case):
    path = write_case(tmp_path, LMDB_DATA)
    first = get_solver(path)
    first.step(3)
    state_file = first.snapshot()
    side = state_file + snapshot_mod.RNG_SUFFIX
    good = json.loads(open(side).read())
    with open(side, "w") as f:
        json.dump(damage(good, case), f)

    resumed = get_solver(path)
    common.rng().random(3)        # so that the file's RNG state differs from the solver's
    rng_before = json.dumps(common.get_rng_state(), sort_keys=True)
    layer_states = json.dumps(snapshot_mod.resume_state(resumed)["train_net"], sort_keys=True)
    with pytest.raises(CaffeError) as err:
        resumed.restore(state_file)
    message = str(err.value)
    assert "\n" not in message and os.path.basename(side) in message
    assert "damaged resume file" in message or "not a resume file" in message
    # nothing of the side file was applied: the RNG and data cursors are as they were
    assert json.dumps(common.get_rng_state(), sort_keys=True) == rng_before
    assert json.dumps(snapshot_mod.resume_state(resumed)["train_net"],
                      sort_keys=True) == layer_states


def test_an_intact_side_file_still_restores_exactly(tmp_path):
    straight = get_solver(write_case(tmp_path / "straight", LMDB_DATA))
    straight.step(5)
    path = write_case(tmp_path / "split", LMDB_DATA)
    first = get_solver(path)
    first.step(3)
    state_file = first.snapshot()
    resumed = get_solver(path)
    resumed.restore(state_file)
    resumed.step(2)
    for key, value in params_of(straight.net).items():
        assert (params_of(resumed.net)[key] == value).all(), key


def test_a_history_blob_of_the_wrong_size_names_the_state_file(tmp_path):
    from caffe_lite.proto import caffe_pb2
    path = write_case(tmp_path, LMDB_DATA)
    first = get_solver(path)
    first.step(1)
    state_file = first.snapshot()
    state = caffe_pb2.SolverState()
    with open(state_file, "rb") as f:
        state.ParseFromString(f.read())
    del state.history[0].data[:]
    state.history[0].data.extend([0.0] * 50)
    with open(state_file, "wb") as f:
        f.write(state.SerializeToString())
    with pytest.raises(CaffeError) as err:
        get_solver(path).restore(state_file)
    assert str(err.value.path) == str(state_file)
    assert str(err.value).endswith("history blob 0: blob: 50 data values for shape [5, 108] "
                                   "(540 values)")      # ip1's weight: 5 x (6 x 6 x 3)
