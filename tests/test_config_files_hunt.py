"""Configuration as an LSST user and as a pipeline operator: defaults, checks, -c / -C overrides, save/load,
copies, freezing, validation before work, and the configuration recorded in outputs.

Tests whose docstring says "Was a defect" pin the fix of a defect this review found.
"""

import json
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from psfmatch import Exposure, InvalidConfigError, ModelPsfMatchConfig, ModelPsfMatchTask
from psfmatch.cli import main
from psfmatch.config import ChoiceField, ConfigChoiceField, Field, ListField, RangeField, apply_overrides
from psfmatch.errors import InvalidInputError
from psfmatch.psf import GaussianPsf

PSFMATCH = os.path.join(os.path.dirname(sys.executable), "psfmatch")
SCI_SIGMA, REF_SIGMA = 1.8, 2.6


def _exposure(n=160, sigma=SCI_SIGMA):
    rng = np.random.default_rng(1)
    img = rng.normal(0.0, 1.0, (n, n)).astype(np.float32)
    return Exposure(img, np.zeros((n, n), np.int32), np.ones((n, n), np.float32), psf=GaussianPsf(21, 21, sigma))


@pytest.fixture(scope="module")
def exposure_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg_input") / "exp.fits"
    _exposure().writeFits(str(path))
    return str(path)


def _cli(args, cwd=None):
    p = subprocess.run([PSFMATCH, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    return p.returncode, p.stdout, p.stderr


def _kernel_x_variance(image):
    y, x = np.mgrid[:image.shape[0], :image.shape[1]]
    c = (image.shape[1] - 1) / 2
    return float((image * (x - c) ** 2).sum() / image.sum())


def _dirty_config():
    """A config touching both kernel choices: non-default values, an explicit default, inf, lists."""
    c = ModelPsfMatchConfig()
    c.kernel.name = "DF"
    c.kernel["DF"].kernelSize = 15
    c.kernel["DF"].lambdaScaling = 0.1 + 0.2
    c.kernel["DF"].forwardRegularizationOrders = [3, 1]
    c.kernel["AL"].alardSigGauss = [0.1 + 0.2, 1e-300, 2.5]
    c.kernel["AL"].spatialKernelOrder = 2  # explicit, at its default
    c.kernel["AL"].solveRcond = 0.5
    c.qaMaxResidual = math.inf
    c.autoKernel = False
    c.maxMemoryGiB = 5e-324
    return c


# ---------------------------------------------------------------------------
# defaults and checks


def test_prose_defaults_equal_real_defaults():
    """README / qa.rst / diagnostics docstring / lsst.rst / lsst-reference defaults."""
    c = ModelPsfMatchConfig()
    assert (c.qaMaxResidual, c.qaMaxKernelNegativeFraction, c.qaMaxKernelShift, c.qaMaxApertureFluxMismatch) == \
        (1e-2, 0.3, 0.2, 1e-2)
    assert (c.illPosedTolerance, c.maxMemoryGiB, c.autoKernel, c.autoKernelMaxSpatialOrder, c.strict) == \
        (0.01, 8.0, True, 2, False)
    assert (c.doAutoPadPsf, c.autoPadPsfTo, c.padPsfBy, c.kernel.name) == (True, 1.4, 0, "AL")
    al, df = c.kernel["AL"], c.kernel["DF"]
    assert (al.kernelSizeFwhmScaling, al.kernelSizeMin, al.kernelSizeMax) == (6.0, 21, 35)
    assert (al.alardGaussBeta, al.alardMinSig, al.alardMinSigDeconv) == (2.0, 0.7, 0.4)
    assert (df.kernelBasisSet, df.usePcaForSpatialKernel, df.regularizationType, df.forwardRegularizationOrders,
            df.regularizationBorderPenalty, df.lambdaType, df.lambdaValue, df.lambdaScaling) == \
        ("delta-function", True, "centralDifference", [1, 2], 3.0, "relative", 0.2, 1e-4)
    # setDefaults values are defaults, not explicit choices (autoKernel must stay free to choose)
    assert not df.isExplicit("usePcaForSpatialKernel") and not df.isExplicit("kernelBasisSet")


def _checked_fields():
    c = ModelPsfMatchConfig()
    for cfg, path in ((c, "ModelPsfMatchConfig"), (c.kernel["AL"], "ModelPsfMatchConfig.kernel['AL']"),
                      (c.kernel["DF"], "ModelPsfMatchConfig.kernel['DF']")):
        for name, f in cfg._fields().items():
            if isinstance(f, RangeField):
                if f.min is not None:
                    yield cfg, path, name, (f.min - 1 if f.inclusiveMin else f.min), "range"
                if f.max is not None:
                    yield cfg, path, name, (f.max + 1 if f.inclusiveMax else f.max), "range"
            elif isinstance(f, ChoiceField):
                yield cfg, path, name, ("zzz" if f.dtype is str else 7), "one of"
            elif isinstance(f, Field) and not isinstance(f, (ListField, ConfigChoiceField)) and f.check is not None:
                yield cfg, path, name, -1, "non-negative" if name == "padPsfBy" else "odd integer"


def test_every_range_and_choice_is_enforced_naming_path_value_and_allowed():
    n = 0
    for cfg, path, name, bad, allowed in _checked_fields():
        with pytest.raises(InvalidConfigError) as info:
            setattr(cfg, name, bad)
        msg = str(info.value)
        assert f"{path}.{name}" in msg and repr(bad) in msg and allowed in msg, msg
        field = cfg._fields()[name]
        if isinstance(field, ChoiceField):
            assert all(repr(a) in msg for a in field.allowed), msg
        n += 1
    assert n >= 35


# ---------------------------------------------------------------------------
# -c parsing


@pytest.mark.parametrize("override, read, expected", [
    ("kernel.active.kernelSize=25", lambda c: c.kernel["AL"].kernelSize, 25),
    ("kernel.active.kernelSize = 25", lambda c: c.kernel["AL"].kernelSize, 25),
    ("kernel.active.kernelSize=25.0", lambda c: c.kernel["AL"].kernelSize, 25),
    ("kernel['DF'].lambdaScaling=1e-3", lambda c: c.kernel["DF"].lambdaScaling, 1e-3),
    ('kernel["DF"].lambdaScaling=1e-3', lambda c: c.kernel["DF"].lambdaScaling, 1e-3),
    ("kernel.DF.lambdaScaling=1e-3", lambda c: c.kernel["DF"].lambdaScaling, 1e-3),
    ("kernel.name=DF", lambda c: c.kernel.name, "DF"),
    ("kernel.name='DF'", lambda c: c.kernel.name, "DF"),
    ("kernel=DF", lambda c: c.kernel.name, "DF"),
    ("doAutoPadPsf=false", lambda c: c.doAutoPadPsf, False),
    ("doAutoPadPsf=False", lambda c: c.doAutoPadPsf, False),
    ("doAutoPadPsf=0", lambda c: c.doAutoPadPsf, False),
    ("strict=yes", lambda c: c.strict, True),
    ("maxMemoryGiB=inf", lambda c: c.maxMemoryGiB, math.inf),
    ("kernel['AL'].alardSigGauss=[1,2,4]", lambda c: c.kernel["AL"].alardSigGauss, [1.0, 2.0, 4.0]),
    ("kernel.active.alardSigGauss=1,2,4", lambda c: c.kernel["AL"].alardSigGauss, [1.0, 2.0, 4.0]),
    ("kernel.active.alardSigGauss=(1,2,4)", lambda c: c.kernel["AL"].alardSigGauss, [1.0, 2.0, 4.0]),
    ("kernel.active.alardSigGauss=2", lambda c: c.kernel["AL"].alardSigGauss, [2.0]),
    ("kernel.DF.centralRegularizationStencil=5", lambda c: c.kernel["DF"].centralRegularizationStencil, 5),
    ("kernel.active.fitRegion= valid ", lambda c: c.kernel["AL"].fitRegion, "valid"),
])
def test_dash_c_values(override, read, expected):
    c = apply_overrides(ModelPsfMatchConfig(), [override])
    value = read(c)
    assert value == expected and type(value if not isinstance(value, list) else value[0]) is \
        type(expected if not isinstance(expected, list) else expected[0])


@pytest.mark.parametrize("override, match", [
    ("kernel.active.kernelSize=None", r"kernel\['AL'\].kernelSize: a value is required \(None is not allowed\)"),
    ("kernel.active.kernelSize=True", r"kernelSize: expected an int; got True"),
    ("kernel.active.kernelSize=25.5", r"kernelSize: expected an int; got 25.5"),
    ("kernel.active.kernelSize=26", r"kernelSize: must satisfy an odd integer >= 3; got 26"),
    ("doAutoPadPsf=2", r"doAutoPadPsf: expected a bool \(True or False\); got 2"),
    ("doAutoPadPsf=off", r"doAutoPadPsf: expected a bool"),
    ("autoPadPsfTo=inf", r"autoPadPsfTo: must be finite"),
    ("kernel.name=df", r"kernel.name: must be one of \['AL', 'DF'\]; got 'df'"),
    ("kernel.active.fitRegion='a=b c'", r"fitRegion: must be one of 'full', 'stamp', 'valid'; got 'a=b c'"),
    ("kernel[DF].lambdaScaling=1", r"must be quoted, as in kernel\['DF'\]"),
    ("kernel.XX.kernelSize=25", r"kernel has no choice 'XX': use active or one of \['AL', 'DF'\]"),
    ("kernel.active=DF", r"set kernel.name or a field of .active"),
    ("kernelSize=25", r"kernelSize is a field of the kernel choice: use kernel.active.kernelSize"),
    ("kernel.active.alardSigGauss=[1,2,", r"cannot read \[1,2, as a list of floats"),
    ("kernel.active.alardSigGauss=[]", r"alardSigGauss: needs at least 1 item"),
    ("kernel.active.alardDegGauss=[1.5, 2, 2]", r"alardDegGauss\[0\]: expected an int; got 1.5"),
])
def test_dash_c_refusals_are_typed_and_name_the_field(override, match):
    with pytest.raises(InvalidConfigError, match=match):
        apply_overrides(ModelPsfMatchConfig(), [override])


def test_repeated_overrides_last_wins_and_files_apply_before_dash_c(tmp_path, capsys):
    c = apply_overrides(ModelPsfMatchConfig(), ["kernel.active.kernelSize=25", "kernel.active.kernelSize=27"])
    assert c.kernel["AL"].kernelSize == 27
    f = tmp_path / "o.py"
    f.write_text("config.kernel.active.kernelSize = 31\nconfig.kernel.active.sizeCellX = 64\n")
    rc = main(["config", "-c", "kernel.active.kernelSize=23", "-C", str(f)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "\nconfig.kernel['AL'].kernelSize = 23\n" in out and "\nconfig.kernel['AL'].sizeCellX = 64\n" in out


# ---------------------------------------------------------------------------
# save / load / copies / freeze


def test_save_load_roundtrip_both_choices_and_explicitness(tmp_path):
    c = _dirty_config()
    path = tmp_path / "saved.py"
    c.save(path)
    d = ModelPsfMatchConfig()
    d.load(path)
    assert d == c and d.to_dict() == c.to_dict() and d._explicit_state() == c._explicit_state()
    assert d.kernel["AL"].isExplicit("spatialKernelOrder") and not d.kernel["AL"].isExplicit("kernelSize")
    assert d.qaMaxResidual == math.inf and d.maxMemoryGiB == 5e-324
    assert d.kernel["AL"].alardSigGauss == [0.30000000000000004, 1e-300, 2.5]
    for e in (pickle.loads(pickle.dumps(c)), c.copy(), __import__("copy").deepcopy(c)):
        assert e == c
    assert json.loads(json.dumps(c.to_dict())) == c.to_dict()
    d.kernel["DF"].kernelSize = 17
    assert d != c and c.kernel["DF"].kernelSize == 15


def test_save_refuses_non_py_name():
    with pytest.raises(InvalidConfigError, match=r"name it FILE.py; got 'x.toml'"):
        ModelPsfMatchConfig().save("x.toml")


def test_frozen_config_refuses_every_kind_of_change(tmp_path):
    c = _dirty_config()
    c.freeze()
    with pytest.raises(InvalidConfigError, match=r"ModelPsfMatchConfig.autoKernel: the config is frozen"):
        c.autoKernel = True
    with pytest.raises(InvalidConfigError, match=r"alardSigGauss: the config is frozen"):
        c.kernel["AL"].alardSigGauss.append(3.0)
    with pytest.raises(InvalidConfigError, match=r"kernel.name: the config is frozen"):
        c.kernel.name = "AL"
    with pytest.raises(InvalidConfigError, match=r"the config is frozen"):
        apply_overrides(c, ["kernel.DF.kernelSize=21"])
    assert c.kernel["AL"].alardSigGauss == [0.30000000000000004, 1e-300, 2.5] and c.kernel["DF"].kernelSize == 15
    assert c.copy()._frozen is False and c.copy() == c


def test_saved_config_gives_the_same_kernel_in_a_fresh_process(exposure_file, tmp_path):
    """An explicit field at its default (lambdaScaling) must survive save -> -C in another process: autoKernel
    would otherwise choose another strength (the kernels differ by ~6e-5)."""
    from psfmatch.io import read_exposure, read_kernel

    c = ModelPsfMatchConfig()
    c.kernel.name = "DF"
    c.kernel.active.kernelSize = 17
    c.kernel.active.lambdaScaling = 1e-4  # explicit at its default
    ref = GaussianPsf(31, 31, REF_SIGMA)
    exposure = read_exposure(exposure_file)
    here = ModelPsfMatchTask(config=c).run(exposure, ref)
    free = c.copy()
    free.kernel.active._explicit.discard("lambdaScaling")
    other = ModelPsfMatchTask(config=free).run(exposure, ref)
    k_here = here.psfMatchingKernel.computeImage((80, 80))
    assert np.abs(k_here - other.psfMatchingKernel.computeImage((80, 80))).max() > 1e-6  # the test can fail
    c.save(tmp_path / "saved.py")
    rc, _, err = _cli(["-q", "run", exposure_file, "-r", "gaussian:sigma=2.6,size=31", "-o", "m.fits",
                       "--kernel-out", "k.fits", "-C", "saved.py"], cwd=tmp_path)
    assert rc == 0, err
    np.testing.assert_array_equal(read_kernel(str(tmp_path / "k.fits")).computeImage((80, 80)), k_here)
    np.testing.assert_array_equal(read_exposure(str(tmp_path / "m.fits")).image, here.psfMatchedExposure.image)


# ---------------------------------------------------------------------------
# override files: errors


@pytest.mark.parametrize("name, text, match", [
    ("syn.py", "config.kernel.name = 'DF'\nconfig.kernel.active.kernelSize = (\n",
     r"syn.py' is not valid Python: .*line 2"),
    ("syn.toml", "[kernel.AL]\nkernelSize = \n", r"syn.toml' is not valid TOML: .*line 2"),
    ("syn.yaml", "kernel:\n  AL: [1\n", r"syn.yaml' is not valid YAML"),
    ("noext", "config.autoKernel = False\n", r"'.*noext': use a .py, .toml, .yaml or .yml file"),
    ("exits.py", "import sys\nsys.exit(3)\n", r"exits.py' tried to end the program: it raised SystemExit\(3\)"),
])
def test_override_file_syntax_errors_are_typed_and_name_the_file(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidConfigError, match=match):
        ModelPsfMatchConfig().load(path)


def test_missing_file_and_directory_are_typed(tmp_path):
    with pytest.raises(InvalidConfigError, match=r"missing.py' does not exist"):
        ModelPsfMatchConfig().load(tmp_path / "missing.py")
    (tmp_path / "adir.py").mkdir()
    with pytest.raises(InvalidConfigError, match=r"adir.py' cannot be read: Is a directory"):
        ModelPsfMatchConfig().load(tmp_path / "adir.py")


@pytest.mark.parametrize("args, match", [
    (["-C", "missing.py"], r"config override file 'missing.py' does not exist"),
    (["-C", "adir.py"], r"'adir.py' cannot be read"),
    (["-C", "syn.py"], r"'syn.py' is not valid Python: .*line 1"),
    (["-C", "unk.py"], r"has no field 'kernelSise'; did you mean 'kernelSize'"),
    (["-c", "kernel.active.kernelSize=26"], r"kernelSize: must satisfy an odd integer >= 3; got 26"),
])
def test_cli_config_errors_one_line_no_traceback(tmp_path, args, match):
    (tmp_path / "adir.py").mkdir()
    (tmp_path / "syn.py").write_text("config.kernel.active.kernelSize = (\n")
    (tmp_path / "unk.py").write_text("config.kernel.active.kernelSise = 25\n")
    rc, out, err = _cli(["config", *args], cwd=tmp_path)
    assert rc == 1 and out == ""  # documented: "a wrong path or value is a failure naming it"
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("psfmatch config: error: ") and __import__("re").search(match, err), err


@pytest.mark.parametrize("name, text, match", [
    ("unk.py", "config.kernel.name = 'DF'\nconfig.kernel.active.kernelSise = 25\n", r"unk\.py.*line 2"),
    ("bad.py", "x = 1\nconfig.kernel.active.kernelSize = 26\n", r"bad\.py.*line 2"),
    ("nameerr.py", "x = 1\nconfig.kernel.active.kernelSize = undefined\n", r"nameerr\.py.*line 2"),
    ("bad.toml", "[kernel.AL]\nkernelSize = 26\n", r"bad\.toml"),
    ("unk.yaml", "kernel:\n  AL:\n    kernelSise: 25\n", r"unk\.yaml"),
])
def test_errors_inside_override_files_name_the_file_and_line(tmp_path, name, text, match):
    """Was a defect (fixed): an error raised by an assignment inside a -C file (unknown field, bad value, NameError)
    names neither the file nor the line."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidConfigError, match=match):
        ModelPsfMatchConfig().load(path)


@pytest.mark.parametrize("how", ["toml", "py", "dash_c"])
def test_a_failed_override_leaves_the_config_as_it_was(tmp_path, how):
    """Was a defect (fixed): a failed load()/apply_overrides leaves the config half-changed."""
    c = ModelPsfMatchConfig()
    with pytest.raises(InvalidConfigError):
        if how == "toml":
            (tmp_path / "p.toml").write_text('autoKernel = false\n[kernel]\nname = "DF"\n[kernel.DF]\nkernelSize = 4\n')
            c.load(tmp_path / "p.toml")
        elif how == "py":
            (tmp_path / "p.py").write_text("config.kernel.name = 'DF'\nconfig.kernel.active.kernelSise = 25\n")
            c.load(tmp_path / "p.py")
        else:
            apply_overrides(c, ["kernel.name=DF", "kernel.active.kernelSize=4"])
    assert c == ModelPsfMatchConfig() and c.kernel.name == "AL"


def test_yaml_repeated_key_is_refused(tmp_path):
    """Was a defect (fixed): a YAML override file with a repeated key silently drops the first one's settings (TOML
    refuses it)."""
    pytest.importorskip("yaml")
    path = tmp_path / "dup.yaml"
    path.write_text("kernel:\n  AL:\n    kernelSize: 25\n  AL:\n    spatialKernelOrder: 1\n")
    with pytest.raises(InvalidConfigError, match=r"dup\.yaml.*AL"):
        ModelPsfMatchConfig().load(path)


def test_numpy_string_values_save_and_load_back(tmp_path):
    """Was a defect (fixed): a numpy string (np.str_) is stored as is and save()/psfmatch config write np.str_('DF'),
    which load() refuses (NameError)."""
    c = ModelPsfMatchConfig()
    c.kernel.name = np.str_("DF")
    c.kernel["AL"].fitRegion = np.str_("valid")
    c.save(tmp_path / "np.py")
    d = ModelPsfMatchConfig()
    d.load(tmp_path / "np.py")
    assert d == c and type(c.kernel.name) is str


def test_malformed_dash_c_is_a_usage_error(tmp_path):
    """Was a defect (fixed): a malformed -c (no '=') exits 1, but the docs make a malformed argument a usage error,
    exit 2 (as --kernel-sum 0 and a bad PSF SPEC are)."""
    rc, _, err = _cli(["config", "-c", "kernelSize"], cwd=tmp_path)
    assert "must look like key=value" in err
    assert rc == 2


# ---------------------------------------------------------------------------
# validation before work, and the configuration actually used


@pytest.mark.parametrize("overrides, match", [
    (["kernel.active.alardNGauss=2"], r"alardNGauss \(2\) must equal len\(alardSigGauss\) \(3\) and "
                                      r"len\(alardDegGauss\) \(3\)"),
    (["kernel.active.scaleByFwhm=true", "kernel.active.kernelSizeMin=41"],
     r"kernelSizeMin \(41\) must not exceed kernelSizeMax \(35\)"),
    (["doAutoPadPsf=false", "padPsfBy=3"], r"padPsfBy \(3 pixels\) must be even"),
])
def test_cross_field_checks_come_before_reading_anything(tmp_path, overrides, match):
    c = apply_overrides(ModelPsfMatchConfig(), overrides)
    with pytest.raises(InvalidConfigError, match=match):
        ModelPsfMatchTask(config=c)
    args = [x for o in overrides for x in ("-c", o)]
    rc, _, err = _cli(["run", "does-not-exist.fits", "-r", "gaussian:sigma=2.6", "-o", "o.fits", *args], cwd=tmp_path)
    assert rc == 1 and __import__("re").search(match, err) and "does-not-exist" not in err, err
    assert os.listdir(tmp_path) == []


def test_kernel_bigger_than_exposure_is_refused_with_remedy():
    c = apply_overrides(ModelPsfMatchConfig(), ["autoKernel=False", "kernel.active.kernelSize=201"])
    with pytest.raises(InvalidInputError, match=r"201x201 kernel.*use a smaller kernelSize"):
        ModelPsfMatchTask(config=c).run(_exposure(), GaussianPsf(31, 31, REF_SIGMA))


def test_order_too_high_for_the_cells_is_lowered_with_the_remedy_named():
    c = apply_overrides(ModelPsfMatchConfig(), ["autoKernel=False", "kernel.active.spatialKernelOrder=2"])
    md = ModelPsfMatchTask(config=c).run(_exposure(), GaussianPsf(31, 31, REF_SIGMA)).metadata
    assert (md["spatialKernelOrderRequested"], md["spatialKernelOrder"]) == (2, 0)
    assert any("sizeCellX <= 53" in n and "spatialKernelOrder lowered from 2 to 0" in n for n in md["notes"])


@pytest.mark.parametrize("overrides, basis", [
    (["autoKernel=False"], "alard-lupton"),
    (["autoKernel=False", "kernel.name=DF", "kernel.active.kernelSize=17"], "delta-function"),
    (["kernel.name=DF"], "delta-function"),
])
def test_the_configured_basis_is_used_and_matches_the_gaussian_identity(overrides, basis):
    """sigma_k^2 = sigma_ref^2 - sigma_sci^2, kernel sum 1, with the basis the overrides chose."""
    c = apply_overrides(ModelPsfMatchConfig(), overrides)
    res = ModelPsfMatchTask(config=c).run(_exposure(), GaussianPsf(31, 31, REF_SIGMA))
    k = res.psfMatchingKernel.computeImage((80, 80))
    assert res.metadata["kernelBasisSet"] == basis
    assert res.psfMatchingKernel.getDimensions()[0] == (17 if "kernel.active.kernelSize=17" in overrides else 21)
    assert abs(k.sum() - 1) < 1e-9
    assert abs(_kernel_x_variance(k) - (REF_SIGMA ** 2 - SCI_SIGMA ** 2)) < 2e-3


def test_batch_output_records_the_config_used_field_by_field(exposure_file, tmp_path):
    from psfmatch.batch import match_one
    from psfmatch.config import iter_fields
    from psfmatch.io import read_exposure

    c = _dirty_config()
    c.maxMemoryGiB = math.inf
    rep = match_one(exposure_file, GaussianPsf(31, 31, REF_SIGMA), str(tmp_path / "o.fits"), c, force=True)
    assert rep.status == "matched", rep.error_message
    rec = read_exposure(str(tmp_path / "o.fits")).getMetadata()["psfmatchBatch"]
    assert rec["config"] == c.to_dict()
    assert rec["config"]["kernel"]["name"] == "DF" and rec["config"]["maxMemoryGiB"] == math.inf
    assert rec["explicitFields"] == ["config.kernel['AL'].spatialKernelOrder"]
    # every field, by path
    flat = {p: v for p, _, v, _ in iter_fields(c)}
    assert flat["config.kernel['DF'].lambdaScaling"] == rec["config"]["kernel"]["DF"]["lambdaScaling"]


@pytest.mark.slow
def test_batch_cli_report_records_the_config_of_dash_C_and_dash_c(exposure_file, tmp_path):
    pytest.importorskip("distributed")
    (tmp_path / "o.py").write_text("config.kernel.name = 'DF'\nconfig.kernel.active.kernelSize = 15\n"
                                   "config.autoKernel = False\n")
    args = ["-C", "o.py", "-c", "kernel.active.spatialKernelOrder=0", "-c", "kernel['AL'].kernelSize=21"]
    rc, _, err = _cli(["-q", "batch", exposure_file, "-r", "gaussian:sigma=2.6", "-o", "out", "--workers", "1",
                       "--report", "rep.json", *args], cwd=tmp_path)
    assert rc == 0, err
    settings = json.loads((tmp_path / "rep.json").read_text())["settings"]
    expected = ModelPsfMatchConfig()
    expected.load(tmp_path / "o.py")
    apply_overrides(expected, args[3::2])
    assert settings["config"] == json.loads(json.dumps(expected.to_dict()))
    assert settings["explicitFields"] == ["config.kernel['AL'].kernelSize"]


def test_rematched_batch_output_does_not_claim_the_old_config(exposure_file, tmp_path):
    """Was a defect (fixed): re-matching a batch output (psfmatch run / task.run) keeps the input's psfmatchBatch
    record and BATCH* cards: the file claims another config and reference than the ones used."""
    from psfmatch.batch import match_one
    from psfmatch.io import read_exposure

    first = _dirty_config()
    first.maxMemoryGiB = math.inf
    rep = match_one(exposure_file, GaussianPsf(31, 31, REF_SIGMA), str(tmp_path / "b.fits"), first, force=True)
    assert rep.status == "matched"
    rc, _, err = _cli(["-q", "run", "b.fits", "-r", "gaussian:sigma=3.5", "-o", "r.fits", "-c", "autoKernel=false",
                       "-c", "kernel.active.kernelSize=25"], cwd=tmp_path)
    assert rc == 0, err
    md = read_exposure(str(tmp_path / "r.fits")).getMetadata()
    rec = md.get("psfmatchBatch")
    assert rec is None or rec["config"]["kernel"]["name"] == "AL"
    assert "BATCHOK" not in (md.get("fitsHeader") or {})


def test_recorded_config_can_be_rebuilt(tmp_path):
    """Was a defect (fixed): no inverse of to_dict: a recorded config (to_dict + explicitFields) cannot be rebuilt;
    loading its table as YAML makes every field explicit and gives another kernel."""
    c = ModelPsfMatchConfig()
    c.kernel["AL"].spatialKernelOrder = 2
    from psfmatch.batch import _explicit_fields

    rebuilt = ModelPsfMatchConfig.from_dict(json.loads(json.dumps(c.to_dict())), explicitFields=_explicit_fields(c))
    assert rebuilt == c
    for setup in ("DF", "AL at its default, and a list"):
        c = ModelPsfMatchConfig()
        if setup == "DF":
            c.kernel.name = "DF"
            c.kernel.active.lambdaType = "absolute"
            c.maxMemoryGiB = float("inf")
        else:
            c.kernel.name = "AL"
            c.kernel.active.alardSigGauss = [1.0, 2.0, 4.0]
            c.autoKernel = True
        rebuilt = ModelPsfMatchConfig.from_dict(json.loads(json.dumps(c.to_dict())),
                                                explicitFields=_explicit_fields(c))
        assert rebuilt == c and rebuilt.to_dict() == c.to_dict()
        if setup != "DF":  # kernel.name = "AL" is explicit at its default: without explicitFields another config
            assert rebuilt != ModelPsfMatchConfig.from_dict(c.to_dict())


def test_from_dict_refuses_what_no_config_has_and_keeps_holding_references():
    """from_dict names an unknown field or path; a successful load keeps the objects a caller holds
    (config.kernel.active) and a failed one changes nothing they see."""
    from psfmatch.batch import _METADATA_KEY, _MARKER_KEYS, _PSF_KEY
    from psfmatch.task import EARLIER_MATCH_CARDS, EARLIER_MATCH_METADATA

    with pytest.raises(InvalidConfigError, match=r"config.kernel\['AL'\] has no field 'kernelSise'"):
        ModelPsfMatchConfig.from_dict({"kernel": {"AL": {"kernelSise": 25}}})
    with pytest.raises(InvalidConfigError, match=r"explicitFields: \"config.kernel\['AL'\].nope\" names no field"):
        ModelPsfMatchConfig.from_dict({}, explicitFields=["config.kernel['AL'].nope"])
    c = ModelPsfMatchConfig()
    held = c.kernel.active
    apply_overrides(c, ["kernel.active.kernelSize=25"])
    assert held.kernelSize == 25 and held.isExplicit("kernelSize")
    with pytest.raises(InvalidConfigError):
        apply_overrides(c, ["kernel.active.spatialKernelOrder=1", "kernel.active.kernelSize=4"])
    assert held.spatialKernelOrder == 2 and held.kernelSize == 25
    c.freeze()
    with pytest.raises(InvalidConfigError, match="the config is frozen; copy it to change it"):
        apply_overrides(c, ["kernel.active.kernelSize=27"])
    # what run() drops from a matched exposure is what the batch writes
    assert set(EARLIER_MATCH_CARDS) == {*_MARKER_KEYS, _PSF_KEY} and _METADATA_KEY in EARLIER_MATCH_METADATA
