"""Configuration: LSST names and defaults, validation at assignment, overrides."""

import pickle

import pytest

from psfmatch import InvalidConfigError, ModelPsfMatchConfig
from psfmatch.config import apply_overrides, load_overrides


def test_lsst_defaults():
    c = ModelPsfMatchConfig()
    assert c.kernel.name == "AL"
    assert (c.doAutoPadPsf, c.autoPadPsfTo, c.padPsfBy) == (True, 1.4, 0)
    a = c.kernel.active
    assert a.kernelSize == 21 and a.sizeCellX == a.sizeCellY == 128
    assert a.spatialKernelOrder == 2 and a.spatialModelType == "chebyshev1"
    assert a.alardNGauss == 3 and a.alardSigGauss == (0.7, 1.5, 3.0) and a.alardDegGauss == (4, 2, 2)
    assert a.scaleByFwhm is False and a.usePcaForSpatialKernel is False and a.numPrincipalComponents == 5
    d = c.kernel["DF"]
    assert d.kernelBasisSet == "delta-function" and d.useRegularization and d.centralRegularizationStencil == 9
    assert d.lambdaType == "relative"


@pytest.mark.parametrize("path, value, match", [
    ("kernelSize", 20, "kernelSize: must satisfy an odd integer >= 3; got 20"),
    ("kernelSize", "big", "expected an int"),
    ("spatialKernelOrder", -1, "out of range"),
    ("spatialModelType", "spline", "must be one of 'chebyshev1', 'polynomial'"),
    ("alardSigGauss", [1.0, -2.0], "every item must satisfy positive sigmas"),
])
def test_validation_at_assignment(path, value, match):
    c = ModelPsfMatchConfig()
    with pytest.raises(InvalidConfigError, match=match):
        setattr(c.kernel.active, path, value)


def test_range_field():
    c = ModelPsfMatchConfig()
    c.autoPadPsfTo = 1.0
    with pytest.raises(InvalidConfigError, match=r"autoPadPsfTo: out of range \[1.0, 2.0\)"):
        c.autoPadPsfTo = 2.0
    with pytest.raises(InvalidConfigError, match="has no field 'kernelSise'"):
        c.kernel.active.kernelSise = 3


def test_choice_and_validate():
    c = ModelPsfMatchConfig()
    c.kernel.name = "DF"
    assert c.kernel.active.kernelBasisSet == "delta-function"
    with pytest.raises(InvalidConfigError, match=r"kernel.name: must be one of \['AL', 'DF'\]; got 'XX'"):
        c.kernel.name = "XX"
    c.kernel.name = "AL"
    c.kernel.active.alardNGauss = 2
    with pytest.raises(InvalidConfigError, match=r"alardNGauss \(2\) must equal len\(alardSigGauss\) \(3\)"):
        c.validate()


def test_freeze_copy_equality_pickle():
    c = ModelPsfMatchConfig()
    d = c.copy()
    assert c == d
    d.kernel.active.kernelSize = 25
    assert c != d and c.kernel.active.kernelSize == 21
    d.freeze()
    with pytest.raises(InvalidConfigError, match="frozen"):
        d.kernel.active.kernelSize = 27
    e = pickle.loads(pickle.dumps(d))
    assert e == d
    assert c.to_dict()["kernel"]["AL"]["kernelSize"] == 21


def test_overrides_strings():
    c = ModelPsfMatchConfig()
    apply_overrides(c, ["kernel.active.kernelSize=25", "doAutoPadPsf=false", "kernel.DF.lambdaScaling=1e-3",
                        "kernel['AL'].alardSigGauss=[1.0, 2.0, 4.5]"])
    assert c.kernel.active.kernelSize == 25 and c.doAutoPadPsf is False
    assert c.kernel["DF"].lambdaScaling == 1e-3 and c.kernel["AL"].alardSigGauss == (1.0, 2.0, 4.5)
    apply_overrides(c, ["kernel.name=DF"])
    assert c.kernel.name == "DF"
    with pytest.raises(InvalidConfigError, match="must look like key=value"):
        apply_overrides(c, ["kernelSize"])
    with pytest.raises(InvalidConfigError, match="unknown config path 'kernel.active.nope'"):
        apply_overrides(c, ["kernel.active.nope=3"])


def test_override_files(tmp_path):
    py = tmp_path / "o.py"
    py.write_text("config.kernel.active.kernelSize = 25\nconfig.kernel.active.sizeCellX = 64\n")
    toml = tmp_path / "o.toml"
    toml.write_text('padPsfBy = 2\ndoAutoPadPsf = false\n[kernel]\nname = "DF"\n[kernel.DF]\nkernelSize = 17\n')
    yml = tmp_path / "o.yaml"
    yml.write_text("kernel:\n  AL:\n    spatialKernelOrder: 1\n")
    c = ModelPsfMatchConfig()
    load_overrides(c, py)
    load_overrides(c, toml)
    load_overrides(c, yml)
    assert c.kernel["AL"].kernelSize == 25 and c.kernel["AL"].sizeCellX == 64
    assert c.padPsfBy == 2 and c.kernel.name == "DF" and c.kernel.active.kernelSize == 17
    assert c.kernel["AL"].spatialKernelOrder == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("[kernel.AL]\nkernelSize = 4\n")
    with pytest.raises(InvalidConfigError, match="kernelSize: must satisfy an odd integer"):
        load_overrides(ModelPsfMatchConfig(), bad)
    with pytest.raises(InvalidConfigError, match="does not exist"):
        load_overrides(c, tmp_path / "missing.py")
    with pytest.raises(InvalidConfigError, match="use a .py, .toml, .yaml or .yml file"):
        (tmp_path / "x.ini").write_text("")
        load_overrides(c, tmp_path / "x.ini")


def test_task_does_not_modify_config():
    from psfmatch import ModelPsfMatchTask
    c = ModelPsfMatchConfig()
    task = ModelPsfMatchTask(config=c)
    c.kernel.active.kernelSize = 25  # the caller's config stays editable; the task holds a frozen copy
    assert task.config.kernel.active.kernelSize == 21
    with pytest.raises(InvalidConfigError, match="frozen"):
        task.config.kernel.active.kernelSize = 25


@pytest.mark.parametrize("set_, match", [
    (lambda c: setattr(c.kernel.active, "kernelSize", float("inf")), r"kernelSize: expected an int; got inf"),
    (lambda c: apply_overrides(c, ["kernel.active.kernelSize=1e400"]), r"kernelSize: expected an int; got inf"),
    (lambda c: setattr(c.kernel["DF"], "lambdaScaling", float("inf")), r"lambdaScaling: must be finite; got inf"),
    (lambda c: setattr(c.kernel["DF"], "regularizationBorderPenalty", float("-inf")), r"must be finite; got -inf"),
    (lambda c: setattr(c.kernel.active, "kernelSizeFwhmScaling", float("inf")), r"must be finite; got inf"),
])
def test_non_finite_values_are_refused(set_, match):
    with pytest.raises(InvalidConfigError, match=match):
        set_(ModelPsfMatchConfig())


def test_thresholds_take_inf_to_switch_their_check_off():
    c = ModelPsfMatchConfig()
    for name in ("qaMaxResidual", "illPosedTolerance", "autoKernelMaxNoiseGain", "maxMemoryGiB", "autoKernelTolerance",
                 "autoKernelResidualFloor"):
        setattr(c, name, float("inf"))
        assert getattr(c, name) == float("inf")


def test_numpy_scalars_and_arrays_are_taken_like_python_values():
    import numpy as np
    c = ModelPsfMatchConfig()
    a = c.kernel.active
    a.kernelSize = np.int64(25)
    a.alardSigGauss = np.array([1.0, 2.0, 4.0])
    a.alardDegGauss = [np.int64(4), 2, 2]
    a.scaleByFwhm = np.bool_(True)
    a.kernelSizeFwhmScaling = np.float32(5.5)
    assert (a.kernelSize, a.alardSigGauss, a.alardDegGauss, a.scaleByFwhm) == (25, (1.0, 2.0, 4.0), (4, 2, 2), True)
    assert type(a.kernelSize) is int and type(a.scaleByFwhm) is bool and type(a.alardSigGauss[0]) is float
    with pytest.raises(InvalidConfigError, match=r"kernelSize: expected an int; got np.float64\(25.5\)"):
        a.kernelSize = np.float64(25.5)
    with pytest.raises(InvalidConfigError, match="kernelSize: expected an int"):
        a.kernelSize = np.bool_(True)


@pytest.mark.parametrize("override, match", [
    ("kernel[AL].kernelSize=25", r"the key in 'kernel\[AL\]' must be quoted, as in kernel\['AL'\]"),
    ("kernelSize[0].x=3", r"'kernelSize' is not a field with choices"),
    ("kernel.name=[1]", r"kernel.name: must be one of \['AL', 'DF'\]; got \[1\]"),
    ("kernel[1].kernelSize=25", r"no choice 1; choices are \['AL', 'DF'\]"),
])
def test_malformed_overrides_raise_typed_errors(override, match):
    with pytest.raises(InvalidConfigError, match=match):
        apply_overrides(ModelPsfMatchConfig(), [override])


@pytest.mark.parametrize("name, text, match", [
    ("syntax.py", "config.kernel.active.kernelSize = \n", r"syntax.py' is not valid Python: invalid syntax"),
    ("choice.toml", "[kernel]\nAL = 3\n", r"config override ModelPsfMatchConfig.kernel.AL must be a table of "
                                          r"fields; got 3"),
    ("nested.yaml", "config: 3\n", r"config override ModelPsfMatchConfig must be a table of fields; got 3"),
])
def test_malformed_override_files_raise_typed_errors(tmp_path, name, text, match):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidConfigError, match=match):
        load_overrides(ModelPsfMatchConfig(), path)


def test_python_override_file_knows_inf(tmp_path):
    path = tmp_path / "o.py"
    path.write_text("config.maxMemoryGiB = inf\nconfig.qaMaxResidual = float('inf')\n")
    c = load_overrides(ModelPsfMatchConfig(), path)
    assert c.maxMemoryGiB == c.qaMaxResidual == float("inf")


def test_overflowing_fwhm_basis_ratio_is_a_config_error():
    from psfmatch.kernel.basis import alard_lupton_sigmas
    c = ModelPsfMatchConfig().kernel.active
    c.scaleByFwhm = True
    c.alardGaussBeta = 1e300
    with pytest.raises(InvalidConfigError, match=r"alardGaussBeta \(1e\+300\) to the power alardNGauss - 1 \(2\) "
                                                 r"overflows the basis widths: use a ratio .* of about 2"):
        alard_lupton_sigmas(c, 6.0, 4.0)


@pytest.mark.parametrize("how", ["-c", "python", "toml"])
def test_an_lsst_field_psfmatch_omits_is_named_as_such(how, tmp_path):
    hint = (r"maxSpatialConditionNumber is an LSST field that psfmatch omits \(it means nothing for matching PSF "
            r"models: see the ModelPsfMatchTask page of the docs\), so leave it out of the override")
    c = ModelPsfMatchConfig()
    with pytest.raises(InvalidConfigError, match=hint):
        if how == "-c":
            apply_overrides(c, ["kernel.active.maxSpatialConditionNumber=1e10"])
        elif how == "python":
            (tmp_path / "o.py").write_text("config.kernel.active.maxSpatialConditionNumber = 1e10\n")
            load_overrides(c, tmp_path / "o.py")
        else:
            (tmp_path / "o.toml").write_text("[kernel.AL]\nmaxSpatialConditionNumber = 1e10\n")
            load_overrides(c, tmp_path / "o.toml")
    with pytest.raises(InvalidConfigError, match=r"no field 'kernelSise'$"):
        apply_overrides(c, ["kernel.active.kernelSise=25"])


def test_a_config_assigned_to_a_task_applies_whole():
    """task.config = other (as LSST users do) is copied, validated and frozen, and what the task derives from it
    (the kernel configuration, the regularization matrix) follows: it kept the constructor's kernel size."""
    import warnings

    import numpy as np

    from psfmatch import Exposure, MemoryLimitError, ModelPsfMatchTask
    from psfmatch.psf import GaussianPsf

    img = np.random.default_rng(0).normal(size=(150, 150)).astype(np.float32)
    exposure = Exposure(img, variance=np.ones_like(img), psf=GaussianPsf(21, 21, 1.7))
    a, b = ModelPsfMatchConfig(), ModelPsfMatchConfig()
    for c, k in ((a, 11), (b, 19)):
        c.autoKernel = False
        c.kernel.active.kernelSize = k
    task = ModelPsfMatchTask(config=a)
    task.config = b
    b.kernel.active.kernelSize = 7  # the caller's object stays the caller's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = task.run(exposure, GaussianPsf(31, 31, 2.6)).psfMatchingKernel
    assert task.config.kernel.active.kernelSize == task.kConfig.kernelSize == kernel.getWidth() == 19
    with pytest.raises(InvalidConfigError, match="frozen"):
        task.config.kernel.active.kernelSize = 21
    # a delta-function config brings its regularization matrix; one too big for the memory limit is refused whole
    df = ModelPsfMatchConfig()
    df.kernel.name = "DF"
    df.kernel.active.kernelSize = 9
    task.config = df
    assert task.useRegularization and task.hMat.shape == (81, 81)
    huge = ModelPsfMatchConfig()
    huge.kernel.name = "DF"
    huge.kernel.active.kernelSize = 401
    huge.maxMemoryGiB = 0.01
    with pytest.raises(MemoryLimitError):
        task.config = huge
    assert task.config.kernel.active.kernelSize == 9 and task.hMat.shape == (81, 81)
    with pytest.raises(InvalidConfigError, match="config must be a ModelPsfMatchConfig; got dict"):
        task.config = {}
