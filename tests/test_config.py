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
    with pytest.raises(InvalidConfigError, match=r"no field 'kernelSise'; did you mean 'kernelSize'") as info:
        apply_overrides(c, ["kernel.active.kernelSise=25"])
    assert "LSST field" not in str(info.value)


@pytest.mark.parametrize("value", ["minimizeBiasedRisk", "minimizeUnbiasedRisk"])
@pytest.mark.parametrize("how", ["-c", "python", "toml"])
def test_an_lsst_lambda_type_psfmatch_omits_is_named_as_such(value, how, tmp_path):
    # LSST's risk-minimizing lambdaType values are refused as omitted LSST settings, with what replaces them
    # (they used to get only the generic "must be one of 'absolute', 'relative'")
    hint = (rf"kernel\['DF'\]\.lambdaType: lambdaType='{value}' is an LSST setting that psfmatch omits \(it means "
            r"nothing for matching PSF models: see the ModelPsfMatchTask page of the docs\), so leave lambdaType "
            r"unset for autoKernel's regularization sweep to choose the strength \(autoKernel=True, the default\), "
            r"or set lambdaType='relative' with lambdaScaling; the values are 'absolute', 'relative'")
    c = ModelPsfMatchConfig()
    with pytest.raises(InvalidConfigError, match=hint):
        if how == "-c":
            apply_overrides(c, [f"kernel['DF'].lambdaType={value}"])
        elif how == "python":
            (tmp_path / "o.py").write_text(f"config.kernel['DF'].lambdaType = {value!r}\n")
            load_overrides(c, tmp_path / "o.py")
        else:
            (tmp_path / "o.toml").write_text(f"[kernel.DF]\nlambdaType = {value!r}\n")
            load_overrides(c, tmp_path / "o.toml")
    assert c.kernel["DF"].lambdaType == "relative"  # the config is left as it was
    with pytest.raises(InvalidConfigError, match=r"lambdaType: must be one of 'absolute', 'relative'; got 'risk'") \
            as info:
        apply_overrides(c, ["kernel['DF'].lambdaType=risk"])  # any other unknown value: the generic message
    assert "LSST setting" not in str(info.value)


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


def test_the_kernel_choice_refuses_attributes_it_does_not_have(tmp_path):
    """A typo on the choice object (a forgotten .active) is an error naming the remedy, not a silent no-op."""
    c = ModelPsfMatchConfig()
    with pytest.raises(InvalidConfigError, match=r"ModelPsfMatchConfig.kernel has no attribute 'kernelSize' to set: "
                                                 r"set .name, or the fields of .active or of \['AL'/'DF'\]; "
                                                 r"kernelSize is a field of the active choice: set "
                                                 r"ModelPsfMatchConfig.kernel.active.kernelSize"):
        c.kernel.kernelSize = 25
    with pytest.raises(InvalidConfigError, match=r"kernel\['DF'\]: set ModelPsfMatchConfig.kernel\['DF'\].lambdaValue"):
        c.kernel.lambdaValue = 0.3
    with pytest.raises(InvalidConfigError, match=r"no attribute 'Name' to set: .*; did you mean 'name'\?"):
        c.kernel.Name = "DF"
    with pytest.raises(InvalidConfigError, match=r"kernel.active cannot be assigned: set ModelPsfMatchConfig.kernel.name "
                                                 r"\(one of \['AL', 'DF'\]\) to choose the active config"):
        c.kernel.active = c.kernel["DF"]
    assert c == ModelPsfMatchConfig()
    c.freeze()
    with pytest.raises(InvalidConfigError, match="no attribute 'kernelSize' to set"):
        c.kernel.kernelSize = 7
    with pytest.raises(InvalidConfigError, match="frozen"):
        c.kernel.name = "DF"
    path = tmp_path / "o.py"
    path.write_text("config.kernel.kernelSize = 25   # forgot .active\n")
    with pytest.raises(InvalidConfigError, match=r"kernel.active.kernelSize"):
        load_overrides(ModelPsfMatchConfig(), path)


@pytest.mark.parametrize("name, text", [
    ("order.toml", '[kernel.active]\nkernelSize = 25\n\n[kernel]\nname = "DF"\n'),
    ("order.yaml", "kernel:\n  active:\n    kernelSize: 25\n  name: DF\n"),
])
def test_an_override_file_chooses_the_kernel_before_setting_active(tmp_path, name, text):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    (tmp_path / name).write_text(text)
    c = load_overrides(ModelPsfMatchConfig(), tmp_path / name)
    assert c.kernel.name == "DF" and c.kernel.active.kernelSize == 25 and c.kernel["AL"].kernelSize == 21


@pytest.mark.parametrize("name, text", [
    ("mixed.toml", "strict = true\n[config.kernel.DF]\nlambdaValue = 0.3\n"),
    ("mixed.yaml", "strict: true\nconfig:\n  autoKernel: false\n"),
])
def test_a_config_table_must_hold_every_field_of_the_file(tmp_path, name, text):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    (tmp_path / name).write_text(text)
    c = ModelPsfMatchConfig()
    with pytest.raises(InvalidConfigError, match=r"has a top-level 'config' table and other top-level keys "
                                                 r"\['strict'\]: put the fields either all under 'config' or all "
                                                 r"at the top level"):
        load_overrides(c, tmp_path / name)
    assert c == ModelPsfMatchConfig()
    (tmp_path / "only.toml").write_text("[config]\nstrict = true\n[config.kernel.DF]\nlambdaValue = 0.3\n")
    c = load_overrides(ModelPsfMatchConfig(), tmp_path / "only.toml")
    assert c.strict is True and c.kernel["DF"].lambdaValue == 0.3


@pytest.mark.parametrize("name, match", [
    ("overrides.py", r"overrides.py' cannot be read: Is a directory"),
    ("bad.toml", r"bad.toml' is not UTF-8 text \(invalid start byte at byte 14\): save it as UTF-8"),
    ("bad.yaml", r"bad.yaml' is not UTF-8 text \(invalid start byte at byte 13\): save it as UTF-8"),
])
def test_unreadable_override_files_are_config_errors(tmp_path, name, match):
    if name == "overrides.py":
        (tmp_path / name).mkdir()
    else:
        start = b"strict = true\n" if name.endswith(".toml") else b"strict: true\n"
        (tmp_path / name).write_bytes(start + b"\xff\n")
    with pytest.raises(InvalidConfigError, match=match):
        load_overrides(ModelPsfMatchConfig(), tmp_path / name)


@pytest.mark.parametrize("name", ["psfmatch.toml", "psfmatch.yaml", "psfmatch.cfg", "psfmatch"])
def test_save_refuses_a_file_load_would_not_read_as_python(tmp_path, name):
    c = ModelPsfMatchConfig()
    c.kernel.active.kernelSize = 25
    with pytest.raises(InvalidConfigError, match=r"Config.save writes an LSST-style Python override file, which "
                                                 r"load and -C read only from a .py file: name it FILE.py"):
        c.save(tmp_path / name)
    assert not list(tmp_path.iterdir())
    c.save(tmp_path / "psfmatch.PY")
    back = ModelPsfMatchConfig()
    back.load(tmp_path / "psfmatch.PY")
    assert back == c


def test_format_config_notes_the_default_of_the_config_class():
    """DF's setDefaults changes usePcaForSpatialKernel and kernelBasisSet: the note uses those defaults."""
    from psfmatch.config import format_config
    c = ModelPsfMatchConfig()
    c.kernel.name = "DF"
    c.kernel.active.usePcaForSpatialKernel = True  # explicit, equal to DF's default
    c.kernel.active.kernelBasisSet = "delta-function"
    text = format_config(c)
    assert "[default False]\nconfig.kernel['DF'].usePcaForSpatialKernel" not in text.replace("\n# ", " ")
    assert "[default 'alard-lupton']" not in text
    c.kernel.active.usePcaForSpatialKernel = False
    text = format_config(c).replace("\n# ", " ")
    assert ("['deltaFunctionConditionNum']. [default True]\nconfig.kernel['DF'].usePcaForSpatialKernel = False"
            in text)


def test_delta_function_config_says_it_ignores_the_fwhm_rule():
    from psfmatch.config import PsfMatchConfigAL, PsfMatchConfigDF
    for name in ("scaleByFwhm", "kernelSizeFwhmScaling", "kernelSizeMin", "kernelSizeMax"):
        assert "Alard-Lupton only; ignored by the delta-function basis" in getattr(PsfMatchConfigDF, name).doc
        assert "ignored by the delta-function basis" not in getattr(PsfMatchConfigAL, name).doc
    assert list(PsfMatchConfigDF._fields())[:6] == list(PsfMatchConfigAL._fields())[:6]  # same order as before
    c = ModelPsfMatchConfig()
    c.kernel["DF"].kernelSizeMin = 9
    with pytest.raises(InvalidConfigError, match=r"kernelSizeMin: must satisfy an odd integer >= 3"):
        c.kernel["DF"].kernelSizeMin = 8


@pytest.mark.parametrize("override, match", [
    ("kernel.active.kernelSise=25", r"unknown config path 'kernel.active.kernelSise': no field 'kernelSise'; did you "
                                    r"mean 'kernelSize', 'kernelSizeMin' or 'kernelSizeMax'\? The fields are "
                                    r"\['alardDegGauss', .*'usePcaForSpatialKernel'\]$"),
    ("kernel.active.lambdaValue=0.3", r"no field 'lambdaValue'; lambdaValue is a field of kernel\['DF'\]: set "
                                      r"kernel.name=DF first or use kernel\['DF'\].lambdaValue$"),
    ("kernelSize=25", r"no field 'kernelSize'; kernelSize is a field of the kernel choice: use "
                      r"kernel.active.kernelSize$"),
    ("kernel['AL'].alardSigGauss=[1, 2, inf]", r"alardSigGauss: cannot read \[1, 2, inf\] as a list of floats: each "
                                               r"item must be a number or a quoted string; write it as e.g. "
                                               r"\[0.7, 1.5, 3.0\]$"),
    ("kernel['AL'].alardSigGauss=[1, 2", r"alardSigGauss: cannot read \[1, 2 as a list of floats: '\[' was never "
                                         r"closed"),
    ("kernel.actve.kernelSize=25", r"unknown config path 'kernel.actve.kernelSize': kernel has no choice 'actve': "
                                   r"use active or one of \['AL', 'DF'\]; did you mean 'active'\?$"),
])
def test_unknown_override_fields_name_the_remedy(override, match):
    with pytest.raises(InvalidConfigError, match=match):
        apply_overrides(ModelPsfMatchConfig(), [override])


def test_list_fields_behave_like_pex_config_lists():
    c = ModelPsfMatchConfig()
    al = c.kernel["AL"]
    al.alardSigGauss = [1.0, 2.0, 4.5]
    assert al.alardSigGauss == [1.0, 2.0, 4.5] and al.alardSigGauss == (1.0, 2.0, 4.5)
    assert al.alardSigGauss != [1.0, 2.0]
    al.alardSigGauss[2] = 6.0
    assert al.alardSigGauss == [1.0, 2.0, 6.0] and c.kernel["AL"].alardSigGauss == [1.0, 2.0, 6.0]
    sig = al.alardSigGauss
    sig.append(8)
    assert sig == [1.0, 2.0, 6.0, 8.0] and type(sig[3]) is float and al.alardSigGauss == sig
    with pytest.raises(InvalidConfigError, match=r"alardSigGauss\[1\]: expected a float; got 'x'"):
        sig[1] = "x"
    with pytest.raises(InvalidConfigError, match="every item must satisfy positive sigmas"):
        sig.extend([-1.0])
    assert sig == al.alardSigGauss == [1.0, 2.0, 6.0, 8.0]  # a refused change leaves the list and the config
    d = c.kernel["DF"]
    d.forwardRegularizationOrders += [3]
    assert d.forwardRegularizationOrders == [1, 2, 3] and d.isExplicit("forwardRegularizationOrders")
    assert not d.isExplicit("lambdaValue")
    # stored and exported as before: plain values, a plain copy, a pickle
    assert c.to_dict()["kernel"]["AL"]["alardSigGauss"] == [1.0, 2.0, 6.0, 8.0]
    assert type(pickle.loads(pickle.dumps(al.alardSigGauss))) is list
    assert pickle.loads(pickle.dumps(c)) == c and c.copy() == c
    c.freeze()
    with pytest.raises(InvalidConfigError, match="frozen"):
        c.kernel["AL"].alardSigGauss[0] = 0.5
    assert c.kernel["AL"].alardSigGauss[0] == 1.0


def test_assigning_a_choice_name_selects_it():
    c = ModelPsfMatchConfig()
    c.kernel = "DF"
    assert c.kernel.name == "DF" and c.kernel.isExplicit()
    assert ModelPsfMatchConfig(kernel="DF") == c
    with pytest.raises(InvalidConfigError, match=r"kernel.name: must be one of \['AL', 'DF'\]; got 'XX'"):
        c.kernel = "XX"
    with pytest.raises(InvalidConfigError, match=r"kernel: set .name \(or assign a choice name, one of "
                                                 r"\['AL', 'DF'\]\) or the fields of .active, not the choice "
                                                 r"itself; got int"):
        c.kernel = 3
    c.freeze()
    with pytest.raises(InvalidConfigError, match="frozen"):
        c.kernel = "AL"


def test_spatial_orders_and_degrees_above_20_are_refused_when_set():
    # (the basis builders and SpatialFunction cap them at 20: refused at the config, not at the fit)
    config = ModelPsfMatchConfig()
    config.kernel.active.spatialKernelOrder = 20
    config.autoKernelMaxSpatialOrder = 20
    with pytest.raises(InvalidConfigError, match=r"spatialKernelOrder: out of range \[0, 20\]; got 21"):
        config.kernel.active.spatialKernelOrder = 21
    with pytest.raises(InvalidConfigError, match=r"autoKernelMaxSpatialOrder: out of range \[0, 20\]; got 25"):
        config.autoKernelMaxSpatialOrder = 25
    with pytest.raises(InvalidConfigError, match=r"alardDegGauss: every item must satisfy degrees from 0 to 20; "
                                                 r"got \[4, 2, 21\]"):
        config.kernel["AL"].alardDegGauss = [4, 2, 21]
