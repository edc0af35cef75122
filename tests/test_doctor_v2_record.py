"""Doctor v2 (issue 15 items 4, 6 and 7) through a recipe naming a user's model (``model.python``): repairs that
touch the user's model for real (a named init scheme in place), architecture fixes never faked ("needs a code
change"), capacity as advice, and the same alarms and repairs in result.json, alarms.json, the store and
recipe.repaired.yaml."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from tricklab.diagnose.repair import NEEDS_CODE_CHANGE
from tricklab.diagnose.run_doctor import REPAIRED_RECIPE, doctor_train
from tricklab.store import Store
from tricklab.tricks.init import SOUND_SCHEMES

MODELS = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Net(nn.Module):
        def __init__(self, n_in, n_out, scale=1.0, act=True, width=64):
            super().__init__()
            self.fc1, self.fc2, self.out = nn.Linear(n_in, width), nn.Linear(width, width), nn.Linear(width, n_out)
            self.act = act
            with torch.no_grad():
                for m in (self.fc1, self.fc2, self.out):
                    nn.init.kaiming_normal_(m.weight)
                    m.weight.mul_(scale)
                    m.bias.zero_()

        def forward(self, x):
            x = x.flatten(1)
            h = self.fc1(x)
            h = F.relu(h) if self.act else h
            h = self.fc2(h)
            h = h.clamp(min=0) if self.act else h
            return self.out(h)


    def times10(shape, c):
        return Net(shape[0], c, scale=10.0)


    def linear(shape, c):
        return Net(shape[0], c, act=False)


    def wide(shape, c):
        return Net(shape[0], c, width=256)
''')

DATA = ["data.name=synthetic", "data.variant=teacher", "data.size=2000", "epochs=4"]


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    pkg = tmp_path / "usermodels_v2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "usermodels_v2.nets"


def recorded(out, store: Path) -> dict:
    run_dir = Path(out.result.run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    with Store(store) as db:
        rows, row = db.alarms(out.result.run_id), db.get_run(out.result.run_id)
    return {"result_alarms": len(result["alarms"]), "result_repairs": len(result["repairs"]),
            "alarms_json": len(json.loads((run_dir / "alarms.json").read_text())), "store_alarms": len(rows),
            "store_repairs": len(row["result"]["repairs"]), "doctor_alarms": len(out.alarms),
            "doctor_repairs": len(out.repairs), "result": result, "run_dir": run_dir}


def test_an_exploding_user_init_is_reinitialised_in_place_and_recorded_everywhere(user_models, tmp_path):
    store = tmp_path / "store.sqlite"
    out = doctor_train(overrides=[*DATA, f"model.python={user_models}:times10"], repair=True, every=5,
                       runs_root=tmp_path / "runs", store=str(store))
    assert out.diagnosis[0] == "exploding_init" and out.alarms[0].layer == "fc1"
    scheme = out.repairs[0]["action"].removeprefix("re-initialise in place (init.scheme=").removesuffix(")")
    assert scheme in SOUND_SCHEMES and out.attempts == 1                   # the smallest sound one (tests/test_init.py)
    assert out.result.test_accuracy > 0.45                                # it trains (unrepaired: ≈ 0.2)
    n = recorded(out, store)
    assert n["result_alarms"] == n["alarms_json"] == n["store_alarms"] == n["doctor_alarms"] >= 1
    assert n["result_repairs"] == n["store_repairs"] == n["doctor_repairs"] >= 1
    repaired = yaml.safe_load((n["run_dir"] / REPAIRED_RECIPE).read_text())
    assert repaired["init"]["scheme"] == scheme and repaired["model"]["python"].endswith(":times10")
    original = yaml.safe_load((n["run_dir"] / "recipe.yaml").read_text())
    assert original.get("init", {}).get("scheme", "default") != scheme    # the run started with the user's init


def test_a_linear_user_model_needs_a_code_change_and_nothing_is_faked(user_models, tmp_path):
    store = tmp_path / "store.sqlite"
    out = doctor_train(overrides=[*DATA, f"model.python={user_models}:linear"], repair=True, every=5,
                       runs_root=tmp_path / "runs", store=str(store))
    assert out.diagnosis == ["linear_model"]
    assert [r["action"] for r in out.repairs] == [NEEDS_CODE_CHANGE]
    assert "F.relu" in out.repairs[0]["reason"] and out.attempts == 1
    n = recorded(out, store)
    assert n["result_repairs"] == n["store_repairs"] == 1
    assert not (n["run_dir"] / REPAIRED_RECIPE).exists()                  # no recipe change was made


def test_capacity_is_advice_not_a_diagnosis(user_models, tmp_path):
    out = doctor_train(overrides=[*DATA, f"model.python={user_models}:wide"], every=5, runs_root=tmp_path / "runs",
                       store=None)
    assert "too_many_parameters" not in out.diagnosis
    assert [a.kind for a in out.info] == ["too_many_parameters"]
    saved = json.loads((Path(out.result.run_dir) / "result.json").read_text())
    assert [a["kind"] for a in saved["info"]] == ["too_many_parameters"]
    assert all(a["kind"] != "too_many_parameters" for a in saved["alarms"])
