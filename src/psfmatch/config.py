"""Configuration objects with LSST's field names, validated at assignment.

A small re-implementation of the parts of ``lsst.pex.config`` that the task
needs: typed fields with documented defaults and checks, a choice of
sub-configurations (``config.kernel.name = "DF"``; ``config.kernel.active``),
``validate()``, ``freeze()``, equality, ``to_dict()``, and overrides from
``key=value`` strings with dotted paths (``kernel.active.kernelSize=25``), from
LSST-style Python files (``config.kernel.active.kernelSize = 25``) and from
TOML or YAML files holding nested tables.
"""

from __future__ import annotations

import ast
import copy
import difflib
import math
import numbers
import os
import textwrap

import numpy as np

from .errors import InvalidConfigError

__all__ = [
    "format_config",
    "Field",
    "RangeField",
    "ChoiceField",
    "ListField",
    "ConfigChoiceField",
    "Config",
    "PsfMatchConfig",
    "PsfMatchConfigAL",
    "PsfMatchConfigDF",
    "ModelPsfMatchConfig",
    "apply_overrides",
    "load_overrides",
    "iter_fields",
]

_MISSING = object()


class _Descriptor:
    """What every field shares: it knows its attribute name and reads its value from the config."""

    name = None

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, inst, owner=None):
        if inst is None:
            return self
        return inst._values[self.name]


#: LSST fields that psfmatch omits (the ModelPsfMatchTask page of the docs says why): an override that sets
#: one is told so instead of only "no field".
LSST_OMITTED_FIELDS = frozenset({
    "singleKernelClipping", "kernelSumClipping", "spatialKernelClipping", "candidateResidualMeanMax",
    "candidateResidualStdMax", "maxKsumSigma", "maxSpatialIterations", "nStarPerCell", "iterateSingleKernel",
    "checkConditionNumber", "maxConditionNumber", "conditionNumberType", "maxSpatialConditionNumber",
    "constantVarianceWeighting", "fitForBackground", "spatialBgOrder", "useAfwBackground", "afwBackgroundConfig",
    "warpingConfig", "badMaskPlanes", "useCoreStats", "candidateCoreRadius", "calculateKernelUncertainty",
    "useBicForKernelBasis", "alardNGaussDeconv", "alardDegGaussDeconv", "lambdaStepType", "lambdaMin", "lambdaMax",
    "lambdaStep",
})


def _omitted_text(name, kind="field", remedy="so leave it out of the override") -> str:
    """Why an LSST ``kind`` (a field, a setting) that psfmatch omits is refused, and ``remedy``: what to do."""
    return (f"{name} is an LSST {kind} that psfmatch omits (it means nothing for matching PSF models: see the "
            f"ModelPsfMatchTask page of the docs), {remedy}")


def _omitted_hint(name) -> str:
    """The end of an unknown-field message: why an LSST field is missing, and what to do."""
    if name in LSST_OMITTED_FIELDS:
        return "; " + _omitted_text(name)
    return ""


def _unknown_field_hint(config, name) -> str:
    """The end of a message about ``name``, which is not a field of ``config``: the remedy.

    An LSST field that psfmatch omits is named as such; a field of another
    kernel choice (``lambdaValue`` while ``kernel.name`` is ``'AL'``) or of the
    active choice (``kernelSize`` at the top level) gets the path that sets it;
    otherwise the closest field names and the list of fields.
    """
    if name in LSST_OMITTED_FIELDS:
        return _omitted_hint(name)
    choice = config.__dict__.get("_choice")  # the ConfigChoice holding config, if any
    if choice is not None:
        where = choice._field.name
        for key, other in choice._configs.items():
            if other is not config and name in other._fields():
                return (f"; {name} is a field of {where}[{key!r}]: set {where}.name={key} first or use "
                        f"{where}[{key!r}].{name}")
    for field_name, value in config._values.items():
        if isinstance(value, ConfigChoice) and name in value.active._fields():
            return f"; {name} is a field of the {field_name} choice: use {field_name}.active.{name}"
    fields = sorted(config._fields())
    close = difflib.get_close_matches(name, fields, n=3)
    if close:
        names = ", ".join(repr(c) for c in close[:-1]) + " or " * (len(close) > 1) + repr(close[-1])
        return f"; did you mean {names}? The fields are {fields}"
    return f"; the fields are {fields}"


class Field(_Descriptor):
    """A typed configuration field.

    Parameters
    ----------
    doc : str
        What the field does (shown by ``psfmatch config`` and the docs).
    dtype : type
        ``bool``, ``int``, ``float`` or ``str``.
    default
        Default value.
    check : callable, optional
        ``check(value) -> bool``; a False result rejects the value.
    check_doc : str, optional
        Human description of the check, used in error messages and docs.
    optional : bool
        Whether ``None`` is allowed.
    allowInf : bool
        Whether a float field takes ``inf`` (thresholds, where it switches the
        check off); otherwise only finite values are taken.

    Notes
    -----
    numpy scalars are taken like Python's (``np.int64(25)`` for an int field,
    ``np.bool_(True)`` for a bool field).
    """

    def __init__(self, doc, dtype, default, check=None, check_doc=None, optional=False, allowInf=False):
        self.doc = doc
        self.dtype = dtype
        self.default = default
        self.check = check
        self.check_doc = check_doc
        self.optional = optional
        self.allowInf = allowInf

    def __set__(self, inst, value):
        inst._set(self.name, value)

    def _fail(self, path, value, why):
        raise InvalidConfigError(f"{path}: {why}; got {value!r}")

    def coerce(self, value, path):
        if value is None:
            if self.optional:
                return None
            self._fail(path, value, "a value is required (None is not allowed)")
        t = self.dtype
        is_bool = isinstance(value, (bool, np.bool_))
        if t is bool:
            if is_bool:
                v = bool(value)
            elif isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                v = value.lower() in ("true", "yes", "1")
            elif isinstance(value, numbers.Integral) and value in (0, 1):
                v = bool(value)
            else:
                self._fail(path, value, "expected a bool (True or False)")
        elif t is int:
            if is_bool or not isinstance(value, (numbers.Real, str)):
                self._fail(path, value, "expected an int")
            if isinstance(value, numbers.Integral):
                v = int(value)
            else:
                try:
                    v = int(value) if isinstance(value, str) else None
                except ValueError:
                    v = None
                if v is None:
                    try:
                        fv = float(value)
                    except (TypeError, ValueError):
                        self._fail(path, value, "expected an int")
                    if not math.isfinite(fv) or fv != int(fv):
                        self._fail(path, value, "expected an int")
                    v = int(fv)
        elif t is float:
            if is_bool:
                self._fail(path, value, "expected a float")
            try:
                v = float(value)
            except (TypeError, ValueError, OverflowError):
                self._fail(path, value, "expected a float")
            if math.isnan(v):
                self._fail(path, value, "NaN is not allowed")
            if math.isinf(v) and not self.allowInf:
                self._fail(path, value, "must be finite")
        elif t is str:
            if not isinstance(value, str):
                self._fail(path, value, "expected a str")
            v = str(value)  # (a numpy string as a plain one: it is written back as Python)
        else:
            v = value
        if self.check is not None and not self.check(v):
            self._fail(path, value, f"must satisfy {self.check_doc or 'the field check'}")
        return v

    def describe(self) -> str:
        return self.check_doc or ""

    def type_name(self) -> str:
        return self.dtype.__name__


class RangeField(Field):
    """A numeric field within ``[min, max)`` (``inclusiveMax`` makes the upper end closed)."""

    def __init__(self, doc, dtype, default, min=None, max=None, inclusiveMin=True, inclusiveMax=False, **kw):
        self.min, self.max = min, max
        self.inclusiveMin, self.inclusiveMax = inclusiveMin, inclusiveMax
        lo = "" if min is None else ("[" if inclusiveMin else "(") + repr(min)
        hi = "" if max is None else repr(max) + ("]" if inclusiveMax else ")")
        kw.setdefault("check_doc", f"range {lo or '(-inf'}, {hi or 'inf)'}")
        super().__init__(doc, dtype, default, **kw)

    def coerce(self, value, path):
        v = super().coerce(value, path)
        if v is None:
            return v
        if self.min is not None and (v < self.min or (v == self.min and not self.inclusiveMin)):
            self._fail(path, value, f"out of {self.check_doc}")
        if self.max is not None and (v > self.max or (v == self.max and not self.inclusiveMax)):
            self._fail(path, value, f"out of {self.check_doc}")
        return v


class ChoiceField(Field):
    """A field whose value is one of ``allowed`` (a mapping of value to its doc).

    ``omitted`` maps values of LSST's field that psfmatch omits to the remedy: setting one is refused
    with a message that says it is an omitted LSST setting, and what replaces it.
    """

    def __init__(self, doc, dtype, default, allowed, omitted=None, **kw):
        self.allowed = dict(allowed)
        self.omitted = dict(omitted or {})
        kw.setdefault("check_doc", "one of " + ", ".join(repr(a) for a in self.allowed))
        super().__init__(doc, dtype, default, **kw)

    def coerce(self, value, path):
        v = super().coerce(value, path)
        if v is not None and v not in self.allowed:
            if v in self.omitted:
                raise InvalidConfigError(f"{path}: {_omitted_text(f'{self.name}={v!r}', 'setting', self.omitted[v])}; "
                                         f"the values are {', '.join(repr(a) for a in self.allowed)}")
            self._fail(path, value, f"must be {self.check_doc}")
        return v


class _ListValue(list):
    """A list field's value as read from a config (``config.kernel['AL'].alardSigGauss``).

    A list, equal to any list or tuple of the same items (as ``pex_config``'s
    ``List``), whose changes in place (``[i] = x``, ``append``, ``extend``,
    ...) are checked like an assignment of the whole list: they apply to the
    config's current value, respect :meth:`Config.freeze`, mark the field as
    set explicitly and raise :class:`InvalidConfigError` for a bad item, leaving
    the config as it was. The config itself stores a tuple; a copy or pickle of
    this object is a plain list.
    """

    __slots__ = ("_config", "_name")

    def __init__(self, config, name):
        super().__init__(config._values[name])
        self._config = config
        self._name = name

    def _change(self, method, *args):
        new = list(self._config._values[self._name])
        out = getattr(new, method)(*args)
        self._config._set(self._name, new)  # checks the frozen state and every item; marks the field explicit
        super().__setitem__(slice(None), self._config._values[self._name])
        return out

    def __setitem__(self, index, value):
        self._change("__setitem__", index, value)

    def __delitem__(self, index):
        self._change("__delitem__", index)

    def __iadd__(self, other):
        self._change("extend", other)
        return self

    def __imul__(self, n):
        self._change("__imul__", n)
        return self

    def append(self, value):
        self._change("append", value)

    def extend(self, values):
        self._change("extend", values)

    def insert(self, index, value):
        self._change("insert", index, value)

    def pop(self, index=-1):
        return self._change("pop", index)

    def remove(self, value):
        self._change("remove", value)

    def clear(self):
        self._change("clear")

    def reverse(self):
        self._change("reverse")

    def sort(self, *, key=None, reverse=False):
        new = sorted(self._config._values[self._name], key=key, reverse=reverse)
        self._config._set(self._name, new)
        super().__setitem__(slice(None), self._config._values[self._name])

    def __eq__(self, other):
        if isinstance(other, (list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None

    def __reduce_ex__(self, protocol):
        return list, (list(self),)


class ListField(Field):
    """A list of ``itemtype`` values, with optional length bounds and item check.

    The config stores a tuple; reading the field gives a list whose changes in
    place are checked as an assignment (see :class:`_ListValue`).
    """

    def __init__(self, doc, itemtype, default, minLength=None, maxLength=None, itemCheck=None, **kw):
        self.itemtype = itemtype
        self.minLength, self.maxLength = minLength, maxLength
        self.itemCheck = itemCheck
        super().__init__(doc, list, tuple(default), **kw)

    def __get__(self, inst, owner=None):
        if inst is None:
            return self
        if inst._values[self.name] is None:
            return None
        return _ListValue(inst, self.name)

    def coerce(self, value, path):
        if isinstance(value, str):
            text = value.strip()
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                if text.startswith(("[", "(")):  # meant as a list literal: report it whole
                    why = (exc.msg if isinstance(exc, SyntaxError)
                           else "each item must be a number or a quoted string")
                    raise InvalidConfigError(
                        f"{path}: cannot read {text} as a list of {self.itemtype.__name__}s: {why}; write it as "
                        f"e.g. {list(self.default)}") from None
                value = [s.strip() for s in text.split(",") if s.strip()]
        if isinstance(value, np.ndarray) and value.ndim == 1:
            value = value.tolist()
        if isinstance(value, (numbers.Real, str)) and not isinstance(value, (bool, np.bool_)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            self._fail(path, value, f"expected a list of {self.itemtype.__name__}")
        item = Field("", self.itemtype, None)
        out = tuple(item.coerce(v, f"{path}[{i}]") for i, v in enumerate(value))
        if self.minLength is not None and len(out) < self.minLength:
            self._fail(path, value, f"needs at least {self.minLength} item(s)")
        if self.maxLength is not None and len(out) > self.maxLength:
            self._fail(path, value, f"takes at most {self.maxLength} item(s)")
        if self.itemCheck is not None and not all(self.itemCheck(v) for v in out):
            self._fail(path, value, f"every item must satisfy {self.check_doc or 'the item check'}")
        return out

    def type_name(self) -> str:
        return f"list[{self.itemtype.__name__}]"


class ConfigChoice:
    """The value of a ``ConfigChoiceField``: one sub-config per name, one of them active."""

    def __init__(self, field, owner_path):
        self._field = field
        self._path = owner_path
        self._configs = {name: cls() for name, cls in field.typemap.items()}
        for name, c in self._configs.items():
            c._path = f"{owner_path}[{name!r}]"
            c._choice = self  # so that an unknown-field message can name the choice that has the field
        self._name = field.default
        self._frozen = False
        self._name_explicit = False

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value):
        if self._frozen:
            raise InvalidConfigError(f"{self._path}.name: the config is frozen")
        if not isinstance(value, str) or value not in self._configs:
            raise InvalidConfigError(
                f"{self._path}.name: must be one of {sorted(self._configs)}; got {value!r}")
        self._name = str(value)  # (a numpy string as a plain one)
        self._name_explicit = True

    def isExplicit(self, name="name") -> bool:
        """Whether the choice (``"name"``) was assigned by the user rather than left at its default."""
        return bool(getattr(self, "_name_explicit", False)) if name == "name" else False

    @property
    def active(self):
        return self._configs[self._name]

    def __getitem__(self, name):
        try:
            return self._configs[name]
        except (KeyError, TypeError):
            raise InvalidConfigError(f"{self._path}: no choice {name!r}; choices are {sorted(self._configs)}") from None

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self.__dict__.get("_configs", {}):
            return self._configs[name]
        raise AttributeError(f"{self._path} has no attribute {name!r}; use .name, .active or ['AL'/'DF']")

    def __setattr__(self, name, value):
        """Only ``name`` (the choice) may be set: any other attribute is a mistake, not a new attribute."""
        if name.startswith("_") or name == "name":  # the name setter checks the value and the frozen state
            object.__setattr__(self, name, value)
            return
        keys = list(self._configs)
        choose = f"set {self._path}.name (one of {keys}) to choose the active config"
        if name == "active":
            raise InvalidConfigError(f"{self._path}.active cannot be assigned: {choose}, and the fields of "
                                     f"{self._path}.active to change it")
        hint = ""
        if name in self.active._fields():
            hint = f"; {name} is a field of the active choice: set {self._path}.active.{name}"
        else:
            owners = [k for k in keys if name in self._configs[k]._fields()]
            close = difflib.get_close_matches(name, ["name", "active"], n=1)
            if owners:
                hint = f"; {name} is a field of {self._path}[{owners[0]!r}]: set {self._path}[{owners[0]!r}].{name}"
            elif close:
                hint = f"; did you mean {close[0]!r}?"
        raise InvalidConfigError(
            f"{self._path} has no attribute {name!r} to set: set .name, or the fields of .active or of "
            f"[{'/'.join(repr(k) for k in keys)}]{hint}")

    def keys(self):
        return self._configs.keys()

    def __eq__(self, other):
        return isinstance(other, ConfigChoice) and self._name == other._name and self._configs == other._configs

    def to_dict(self):
        return {"name": self._name, **{k: v.to_dict() for k, v in self._configs.items()}}

    def freeze(self):
        self._frozen = True
        for c in self._configs.values():
            c.freeze()

    def validate(self):
        self.active.validate()

    def __deepcopy__(self, memo):
        new = ConfigChoice.__new__(ConfigChoice)
        new._field = self._field
        new._path = self._path
        new._configs = {k: copy.deepcopy(v, memo) for k, v in self._configs.items()}
        for c in new._configs.values():
            c._choice = new
        new._name = self._name
        new._frozen = False
        new._name_explicit = getattr(self, "_name_explicit", False)
        return new

    def __repr__(self):
        return f"ConfigChoice(name={self._name!r}, active={self.active!r})"


class ConfigChoiceField(_Descriptor):
    """A field holding several named sub-configs, one of which is active (``pex_config``'s ConfigChoiceField)."""

    def __init__(self, doc, typemap, default):
        self.doc = doc
        self.typemap = dict(typemap)
        self.default = default

    def __set__(self, inst, value):
        """Assigning a choice name selects it (``config.kernel = "DF"`` is ``config.kernel.name = "DF"``)."""
        if isinstance(value, str):
            inst._values[self.name].name = value  # checks the name and the frozen state
            return
        raise InvalidConfigError(f"{inst._path}.{self.name}: set .name (or assign a choice name, one of "
                                 f"{list(self.typemap)}) or the fields of .active, not the choice itself; "
                                 f"got {type(value).__name__}")

    def type_name(self):
        return "choice of " + ", ".join(self.typemap)


class Config:
    """Base class of configs: fields declared as class attributes, validated at assignment."""

    def __init__(self, **kwargs):
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_frozen", False)
        object.__setattr__(self, "_path", type(self).__name__)
        for name, f in self._fields().items():
            if isinstance(f, ConfigChoiceField):
                self._values[name] = ConfigChoice(f, f"{self._path}.{name}")
            else:
                self._values[name] = copy.deepcopy(f.default)
        object.__setattr__(self, "_explicit", set())
        self.setDefaults()
        self._explicit.clear()  # values from setDefaults are defaults, not user choices
        for k, v in kwargs.items():
            setattr(self, k, v)

    def setDefaults(self):
        """Hook for subclasses to change defaults of their fields."""

    @classmethod
    def _fields(cls) -> dict:
        out = {}
        for klass in reversed(cls.__mro__):
            for k, v in vars(klass).items():
                if isinstance(v, (Field, ConfigChoiceField)):
                    out[k] = v
        return out

    def _set(self, name, value):
        if self._frozen:
            raise InvalidConfigError(f"{self._path}.{name}: the config is frozen; copy it to change it")
        field = self._fields()[name]
        self._values[name] = field.coerce(value, f"{self._path}.{name}")
        self.__dict__.setdefault("_explicit", set()).add(name)

    def isExplicit(self, name) -> bool:
        """Whether field ``name`` was assigned (by code, an override or a file) after construction.

        Assigning a value equal to the default still counts: ``autoKernel`` honours
        every explicit choice (see :mod:`psfmatch.autokernel`).
        """
        if name not in self._fields():
            raise InvalidConfigError(f"{self._path} has no field {name!r}")
        return name in self.__dict__.get("_explicit", ())

    def _explicit_state(self):
        """Which fields were assigned explicitly, recursively (survives copy and pickling)."""
        out = {"": sorted(self.__dict__.get("_explicit", ()))}
        for k, v in self._values.items():
            if isinstance(v, ConfigChoice):
                out[k] = {"name": v.isExplicit(), **{c: v[c]._explicit_state() for c in v.keys()}}
        return out

    def _restore_explicit(self, state):
        object.__setattr__(self, "_explicit", set(state.get("", ())))
        for k, v in self._values.items():
            if isinstance(v, ConfigChoice) and k in state:
                v._name_explicit = bool(state[k].get("name", False))
                for c in v.keys():
                    if c in state[k]:
                        v[c]._restore_explicit(state[k][c])

    def __setattr__(self, name, value):
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        if name not in self._fields():
            raise InvalidConfigError(f"{self._path} has no field {name!r}{_unknown_field_hint(self, name)}")
        self._fields()[name].__set__(self, value)

    # --- the pex_config API -------------------------------------------
    def validate(self):
        """Check cross-field constraints; raises :class:`InvalidConfigError`."""
        for name, f in self._fields().items():
            v = self._values[name]
            if isinstance(f, ConfigChoiceField):
                v.validate()

    def freeze(self):
        """Make the config read-only (the task freezes its copy)."""
        object.__setattr__(self, "_frozen", True)
        for v in self._values.values():
            if isinstance(v, ConfigChoice):
                v.freeze()

    def copy(self):
        """An unfrozen deep copy."""
        return copy.deepcopy(self)

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        object.__setattr__(new, "_values", {k: copy.deepcopy(v, memo) for k, v in self._values.items()})
        object.__setattr__(new, "_frozen", False)
        object.__setattr__(new, "_path", self._path)
        object.__setattr__(new, "_explicit", set(self.__dict__.get("_explicit", ())))
        return new

    def __eq__(self, other):
        """Equal values and the same fields set explicitly: ``autoKernel`` honours an explicit field even at
        its default value, so two configs that differ only there can give different results."""
        return (type(self) is type(other) and self._values == other._values
                and self._explicit_state() == other._explicit_state())

    def to_dict(self) -> dict:
        out = {}
        for k, v in self._values.items():
            if isinstance(v, (Config, ConfigChoice)):
                out[k] = v.to_dict()
            elif isinstance(v, tuple):
                out[k] = list(v)
            else:
                out[k] = v
        return out

    toDict = to_dict

    @classmethod
    def from_dict(cls, d, explicitFields=()):
        """The configuration :meth:`to_dict` describes: the inverse of ``to_dict``, for a configuration recorded
        in a report or a file's metadata (``psfmatchBatch["config"]`` with its ``explicitFields``).

        The fields whose values differ from the defaults are assigned (so they count as set by the user, as
        ``autoKernel`` takes them), and those named in ``explicitFields`` (paths as ``iter_fields`` writes them,
        ``config.kernel['AL'].kernelSize``: the fields set explicitly to their default value) are marked as set;
        every other field keeps its default and is not.  The result equals the recorded configuration
        (``==``: the values and the explicit fields).  A non-finite float may be given as the string
        ``"inf"``, ``"-inf"`` or ``"nan"``, as the batch report (strict JSON) records it.

        Raises
        ------
        InvalidConfigError
            For a field the configuration does not have, a bad value, or a path in ``explicitFields`` that
            names no field.
        """
        config = cls()
        _set_from_dict(config, cls(), d, "config")
        for path in explicitFields:
            _mark_explicit(config, path)
        return config

    def load(self, filename):
        """Apply an override file to this config, as pex_config's ``Config.load`` (see :func:`load_overrides`)."""
        load_overrides(self, filename)

    def save(self, filename):
        """Write this config as a Python override file that :meth:`load` (``-C``) reads back, atomically.

        The file is :func:`format_config`'s text with every choice's fields, so
        that loading it into a new config gives an equal one (the same values
        and the same explicit fields).

        Raises
        ------
        InvalidConfigError
            If ``filename`` does not end in ``.py``: the file is Python, which
            :meth:`load` reads only from a ``.py`` file.
        """
        from .io.fits import atomic_write

        if os.path.splitext(os.fspath(filename))[1].lower() != ".py":
            raise InvalidConfigError(
                f"Config.save writes an LSST-style Python override file, which load and -C read only from a .py "
                f"file: name it FILE.py; got {os.fspath(filename)!r}")
        with atomic_write(os.fspath(filename), overwrite=True) as tmp, open(tmp, "w") as fh:
            fh.write(format_config(self, all_choices=True))

    def items(self):
        return self._values.items()

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def __reduce__(self):
        return (_rebuild_config, (type(self), self.to_dict(), self._explicit_state(),
                                  bool(self.__dict__.get("_frozen", False))))


def _rebuild_config(cls, d, explicit=None, frozen=False):
    c = cls()
    _apply_mapping(c, d, c._path)
    if explicit is not None:
        c._restore_explicit(explicit)
    if frozen:  # (a frozen config stays frozen in another process)
        c.freeze()
    return c


# ---------------------------------------------------------------------------
# psfmatch's configs


def _odd_ge3(v):
    return v >= 3 and v % 2 == 1


class PsfMatchConfig(Config):
    """Fields shared by the Alard-Lupton and delta-function kernel configs."""

    kernelBasisSet = ChoiceField("Type of basis set for the PSF-matching kernel.", str, "alard-lupton",
                                 {"alard-lupton": "Alard-Lupton sum-of-Gaussians basis",
                                  "delta-function": "delta-function basis"})
    kernelSize = Field("Number of rows and columns of the PSF-matching kernel (odd). Too small gives "
                       "'boxy' matched stars; too large a noisy, poorly constrained kernel.", int, 21,
                       check=_odd_ge3, check_doc="an odd integer >= 3")
    scaleByFwhm = Field("Scale kernelSize and the Alard-Lupton widths with the PSFs' FWHM "
                        "(LSST's rule; off for model matching).", bool, False)
    kernelSizeFwhmScaling = RangeField("Kernel size as a multiple of the widest basis sigma when scaleByFwhm.",
                                       float, 6.0, min=1.0)
    kernelSizeMin = Field("Minimum kernel size when scaleByFwhm.", int, 21, check=_odd_ge3,
                          check_doc="an odd integer >= 3")
    kernelSizeMax = Field("Maximum kernel size when scaleByFwhm.", int, 35, check=_odd_ge3,
                          check_doc="an odd integer >= 3")
    spatialModelType = ChoiceField("Type of spatial functions for the kernel coefficients.", str, "chebyshev1",
                                   {"chebyshev1": "Chebyshev polynomials of the first kind over the exposure box",
                                    "polynomial": "plain polynomials in parent pixel coordinates"})
    spatialKernelOrder = RangeField("Spatial order of the kernel variation (0: constant kernel; at most 20).", int, 2,
                                    min=0, max=20, inclusiveMax=True)
    sizeCellX = RangeField("Width of a spatial cell in pixels: one kernel candidate per cell.", int, 128, min=16)
    sizeCellY = RangeField("Height of a spatial cell in pixels.", int, 128, min=16)
    candidatePlacement = ChoiceField(
        "Where each cell's kernel candidate sits.", str, "spread",
        {"spread": "psfmatch: a regular grid from edge to edge of the exposure (one candidate in each cell), so "
                   "the spatial model never extrapolates to the corners",
         "centers": "the centre of each cell (LSST's choice)"})
    usePcaForSpatialKernel = Field(
        "Fit the spatial model on a principal-component basis of the per-cell kernels. As in LSST, the candidates "
        "are then solved again on that basis without regularization, so a regularized delta-function kernel comes "
        "out rougher than without the PCA; the delta-function solve's own rank and condition are in "
        "metadata['deltaFunctionRank'] and ['deltaFunctionConditionNum'].", bool, False)
    subtractMeanForPca = Field("Subtract the mean kernel before the PCA (the mean becomes the first component).",
                               bool, True)
    numPrincipalComponents = RangeField(
        "Most principal components kept (the mean among them, with subtractMeanForPca): fewer when the candidates' "
        "kernels span fewer (no more than the candidates), with a note in metadata['notes'].", int, 5, min=2)
    fitRegion = ChoiceField(
        "Pixels that constrain each candidate's fit.", str, "full",
        {"full": "psfmatch: every pixel where science (*) kernel or the reference is non-zero; the science "
                 "stamp is zero-padded (a PSF model is zero outside its stamp)",
         "stamp": "the reference stamp's pixels only",
         "valid": "LSST: only the central (psfSize - kernelSize + 1)^2 pixels unaffected by the stamp border"})
    solveRcond = RangeField("Relative cut-off on singular values of the (column-scaled) design matrix in every "
                            "least-squares solve; smaller ones are dropped (minimum-norm solution).",
                            float, 1e-7, min=0.0, max=1.0, inclusiveMin=False)

    def validate(self):
        super().validate()
        if self.kernelSizeMin > self.kernelSizeMax:
            raise InvalidConfigError(
                f"{self._path}: kernelSizeMin ({self.kernelSizeMin}) must not exceed kernelSizeMax ({self.kernelSizeMax})")


class PsfMatchConfigAL(PsfMatchConfig):
    """Alard-Lupton kernel configuration (Alard & Lupton 1998; Alard 2000)."""

    alardNGauss = RangeField("Number of Gaussians in the Alard-Lupton basis.", int, 3, min=1)
    alardDegGauss = ListField("Polynomial degree multiplying each Gaussian.", int, (4, 2, 2), minLength=1,
                              itemCheck=lambda v: 0 <= v <= 20, check_doc="degrees from 0 to 20")
    alardSigGauss = ListField("Sigma in pixels of each Gaussian.", float, (0.7, 1.5, 3.0), minLength=1,
                              itemCheck=lambda v: v > 0, check_doc="positive sigmas")
    alardGaussBeta = RangeField("Ratio of successive Gaussian sigmas when scaleByFwhm.", float, 2.0, min=0.0,
                                inclusiveMin=False)
    alardMinSig = RangeField("Minimum sigma of the first Gaussian when scaleByFwhm.", float, 0.7, min=0.25)
    alardMinSigDeconv = RangeField("Minimum sigma when scaleByFwhm and the match deconvolves.", float, 0.4,
                                   min=0.25)

    def setDefaults(self):
        self._values["kernelBasisSet"] = "alard-lupton"

    def validate(self):
        super().validate()
        if self.kernelBasisSet != "alard-lupton":
            raise InvalidConfigError(f"{self._path}.kernelBasisSet must be 'alard-lupton' for the AL config")
        if not (self.alardNGauss == len(self.alardSigGauss) == len(self.alardDegGauss)):
            raise InvalidConfigError(
                f"{self._path}: alardNGauss ({self.alardNGauss}) must equal len(alardSigGauss) "
                f"({len(self.alardSigGauss)}) and len(alardDegGauss) ({len(self.alardDegGauss)})")


def _alard_lupton_only(field):
    """A copy of a shared field of the ``scaleByFwhm`` rule whose doc says the delta-function basis ignores it."""
    out = copy.copy(field)
    out.doc = field.doc + " Alard-Lupton only; ignored by the delta-function basis (as in LSST)."
    return out


class PsfMatchConfigDF(PsfMatchConfig):
    """Delta-function kernel configuration, regularized (Becker et al. 2012)."""

    # LSST's scaleByFwhm rule sizes the Alard-Lupton basis; these fields are kept for LSST's names only
    scaleByFwhm = _alard_lupton_only(PsfMatchConfig.scaleByFwhm)
    kernelSizeFwhmScaling = _alard_lupton_only(PsfMatchConfig.kernelSizeFwhmScaling)
    kernelSizeMin = _alard_lupton_only(PsfMatchConfig.kernelSizeMin)
    kernelSizeMax = _alard_lupton_only(PsfMatchConfig.kernelSizeMax)

    useRegularization = Field("Regularize the delta-function kernel with a smoothness penalty.", bool, True)
    regularizationType = ChoiceField("Type of smoothness penalty.", str, "centralDifference",
                                     {"centralDifference": "Laplacian (5- or 9-point stencil)",
                                      "forwardDifference": "forward differences of the given orders"})
    centralRegularizationStencil = ChoiceField("Laplacian stencil for centralDifference.", int, 9,
                                               {5: "5-point", 9: "9-point"})
    forwardRegularizationOrders = ListField("Forward-difference orders (each 1, 2 or 3).", int, (1, 2),
                                            minLength=1, itemCheck=lambda v: 1 <= v <= 3,
                                            check_doc="orders in 1..3")
    regularizationBorderPenalty = RangeField("Penalty on the kernel's border pixels.", float, 3.0, min=0.0)
    lambdaType = ChoiceField(
        "How the regularization strength lambda is set.", str, "relative",
        {"absolute": "lambda = lambdaValue (LSST's default, tuned for images in counts)",
         "relative": "lambda = lambdaScaling * trace(M) / trace(H): scale-free, so it works for unit-sum "
                     "PSF stamps (psfmatch's default)"},
        # LSST's risk-minimizing searches estimate the risk from image noise, which PSF models do not have
        omitted=dict.fromkeys(("minimizeBiasedRisk", "minimizeUnbiasedRisk"),
                              "so leave lambdaType unset for autoKernel's regularization sweep to choose the strength "
                              "(autoKernel=True, the default), or set lambdaType='relative' with lambdaScaling"))
    lambdaValue = RangeField("Lambda for lambdaType='absolute'.", float, 0.2, min=0.0)
    lambdaScaling = RangeField("Lambda relative to trace(M)/trace(H) for lambdaType='relative'.", float, 1e-4,
                               min=0.0)

    def setDefaults(self):
        self._values["kernelBasisSet"] = "delta-function"
        self._values["usePcaForSpatialKernel"] = True  # LSST's DF default: 440 free pixels x n_s terms otherwise

    def validate(self):
        super().validate()
        if self.kernelBasisSet != "delta-function":
            raise InvalidConfigError(f"{self._path}.kernelBasisSet must be 'delta-function' for the DF config")


class ModelPsfMatchConfig(Config):
    """Configuration of :class:`psfmatch.ModelPsfMatchTask` (LSST's field names and defaults).

    Examples
    --------
    Fields are checked when they are set; ``kernel`` selects the basis and
    ``kernel.active`` is the selected basis' configuration:

    >>> config = ModelPsfMatchConfig()
    >>> config.kernel.name, config.kernel.active.kernelSize, config.doAutoPadPsf
    ('AL', 21, True)
    >>> config.kernel.active.kernelSize = 25
    >>> config.autoPadPsfTo = 2.5
    Traceback (most recent call last):
    ...
    psfmatch.errors.InvalidConfigError: ModelPsfMatchConfig.autoPadPsfTo: out of range [1.0, 2.0); got 2.5
    >>> config.kernel.active.isExplicit("kernelSize"), config.kernel.active.isExplicit("spatialKernelOrder")
    (True, False)
    """

    kernel = ConfigChoiceField("Kernel basis: 'AL' (Alard-Lupton) or 'DF' (regularized delta function).",
                               {"AL": PsfMatchConfigAL, "DF": PsfMatchConfigDF}, "AL")
    doAutoPadPsf = Field("Pad the science PSF stamp to nextOddInteger(kernelSize * autoPadPsfTo) pixels "
                         "when it is smaller.", bool, True)
    autoPadPsfTo = RangeField("Minimum science PSF stamp size as a multiple of kernelSize, when doAutoPadPsf.",
                              float, 1.4, min=1.0, max=2.0)
    padPsfBy = Field("Pixels (even) added to the science PSF stamp when doAutoPadPsf is False.", int, 0,
                     check=lambda v: v >= 0, check_doc="a non-negative integer")
    maskDilationThreshold = RangeField(
        "A bit of the maskDilationPlanes spreads to every output pixel whose kernel footprint covers it, the "
        "footprint being the kernel pixels with |K| >= maskDilationThreshold * max|K| anywhere in the field (0: "
        "every non-zero pixel, as LSST). The bits of the other planes (BAD, SAT, CR...), and NO_DATA and "
        "non-finite pixels, always spread over every non-zero kernel pixel.",
        float, 1e-3, min=0.0, max=1.0)
    maskDilationPlanes = ListField(
        "Mask planes that mark values meant to be used (sources, interpolated estimates): their bits spread by "
        "the maskDilationThreshold footprint. Every other plane marks values that may be wrong and is convolved "
        "all the same (as in LSST): its bits spread over every non-zero kernel pixel, so that no output pixel "
        "without the bit receives anything from it (with the footprint, a masked hot pixel of 1e6 on a sky of "
        "100 +- 2 biased pixels beyond it by up to 130 sigma). Names a mask lacks change nothing; one that is not a "
        "default plane either is warned of (a typo).",
        str, ("DETECTED", "DETECTED_NEGATIVE", "INTRP"))
    convolveTileSize = RangeField("Largest side of the FFT tiles used to apply the kernel (memory scales with its "
                                  "square; the default gives 360 px transforms whose work arrays stay in a core's "
                                  "cache, measured fastest).", int, 384, min=64)
    qaMaxPositions = RangeField("At most this many positions between the candidates are checked by the QA.",
                                int, 256, min=0)
    qaPositionsPerCandidate = RangeField(
        "Positions between the candidates checked by the QA, per cell: the held-out sample is as dense as the "
        "fit's (64 positions for 64 cells with the default 1; at least 4, so that an exposure of one to three "
        "cells has its four corners checked), the exposure's corners among them unless candidates sit there, "
        "and at most qaMaxPositions. Raise it for a denser check of small exposures: "
        "beyond the midpoints between the candidates (about 2 positions per cell) the intervals are divided "
        "in 4, 8 or 16 parts (SpatialCellSet.between_positions).",
        float, 1.0, min=0.0)
    maxMemoryGiB = RangeField("Refuse, before allocating, a kernel fit or a convolution that would need more memory "
                              "than this (GiB); the error gives the estimate.",
                              float, 8.0, min=0.0, inclusiveMin=False, allowInf=True)

    # --- automatic kernel choice (psfmatch; see psfmatch.autokernel) -----
    autoKernel = Field(
        "Choose the kernel size, the basis (Alard-Lupton widths from the PSFs' second moments, "
        "sigma_k^2 = sigma_ref^2 - sigma_sci^2, or a regularized delta-function basis and its strength) and the "
        "spatial order by minimizing the matched-PSF residual at held-out positions between the cells "
        "(Alard & Lupton 1998; Alard 2000; Becker et al. 2012). Only fields the user did not set are "
        "chosen; explicitly set ones (even to their default value) are honoured. False: LSST's behaviour "
        "with the configured values.", bool, True)
    autoKernelTolerance = RangeField(
        "autoKernel: a bigger kernel, richer basis or higher spatial order is chosen only if it lowers the "
        "held-out residual by more than this fraction (smaller gains are negligible).", float, 0.1, min=0.0,
        allowInf=True)
    autoKernelResidualFloor = RangeField(
        "autoKernel: held-out residuals (max|S*K-R|/max R) below this are all equally good; the simplest "
        "such trial wins.", float, 1e-6, min=0.0, allowInf=True)
    autoKernelMaxNoiseGain = RangeField(
        "autoKernel: trials whose unit-sum kernel has sum(K^2) above this multiple of a Gaussian kernel of "
        "covariance C_ref - C_sci (1 / (4 pi sqrt(det C))) are rejected as noisy.", float, 4.0, min=1.0,
        allowInf=True)
    autoKernelMaxSize = RangeField("autoKernel: largest kernel size tried (the sizes also stop at the largest of the "
                                   "science stamp, kernelSize and 1.4 x the 6 sigma the kernel's width needs, "
                                   "within the exposure).",
                                   int, 41, min=3)
    autoKernelMaxDFSize = RangeField(
        "autoKernel: largest delta-function kernel tried (k^2 unknowns each); delta-function trials are made "
        "only when the match is the same over the field.", int, 41, min=3)
    autoKernelMaxSpatialOrder = RangeField(
        "autoKernel: highest spatial order the automatic mode may choose (it may always lower the order, e.g. to "
        "0 for a match that is the same everywhere). Each order above 2 adds to the time to apply the kernel "
        "(exact variance: (2o+1)(2o+2)/2 images; 4096x4096 demo field: the whole run 1.4 times as long at order 3 "
        "and 1.9 times at 4 as at 2), so the default stays at LSST's 2; set 4 for the most accurate match of a "
        "strongly varying PSF (demo field: worst residual 1.3e-3 -> 2e-5).", int, 2, min=0, max=20, inclusiveMax=True)
    autoKernelMaxGrid = RangeField(
        "autoKernel: trials fit at most this many cells per axis (an evenly spread sub-grid including the "
        "outermost cells) and are scored between them.", int, 6, min=2)

    # --- ill-posed matches and quality thresholds (psfmatch.diagnostics) -
    strict = Field(
        "Raise IllPosedMatchError, before anything is fitted or convolved, when the reference PSF is "
        "narrower than the science PSF along some axis in some cell (matching there is a deconvolution). "
        "False: an IllPosedMatchWarning naming the cells, and a flag in metadata['qa'].", bool, False)
    illPosedTolerance = RangeField(
        "A cell is ill-posed when, along some axis, the science sigma exceeds the reference sigma by more than "
        "this many pixels (the largest such deficit over the axes).", float, 0.01, min=0.0,
        allowInf=True)
    qaMaxResidual = RangeField(
        "Warn (KernelQualityWarning) when max|S*K-R|/max(R) at or between the candidates exceeds this.",
        float, 1e-2, min=0.0, inclusiveMin=False, allowInf=True)
    qaMaxKernelNegativeFraction = RangeField(
        "Warn (KernelQualityWarning) when the kernel's negative flux fraction sum|min(K,0)|/sum|K| exceeds "
        "this (the kernel oscillates: ringing and amplified noise).", float, 0.3, min=0.0, max=1.0,
        inclusiveMax=True)
    qaMaxKernelShift = RangeField(
        "Warn (KernelQualityWarning) when the kernel moves a star, at or between the candidates, by more than "
        "this many pixels (the adaptive-moment centroid of S*K minus that of S): the matched exposure's WCS "
        "stays as it was, so positions measured on it are off by that shift. Well-centred PSF models give at "
        "most 0.11 px (real PSFEx models; analytic ones 1e-6); a PSF model off-centre in its stamp (a PSF image "
        "read with recenter=False: 0.2 to 0.9 px for Spitzer IRAC and HST) makes it. inf: not checked.",
        float, 0.2, min=0.0, allowInf=True)
    qaMaxApertureFluxMismatch = RangeField(
        "Warn (KernelQualityWarning) when the encircled flux of the matched PSF differs from the reference's "
        "by more than this fraction of the flux in some circular aperture, at or between the candidates (a "
        "wing the kernel cannot remove or build, which max|S*K-R|/max(R) hardly sees).", float, 1e-2, min=0.0,
        inclusiveMin=False, allowInf=True)

    def validate(self):
        super().validate()
        if not self.doAutoPadPsf and self.padPsfBy % 2 != 0:
            raise InvalidConfigError(f"Config padPsfBy ({self.padPsfBy} pixels) must be even number.")


# ---------------------------------------------------------------------------
# overrides


def _parse_value(text):
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _resolve(config, dotted):
    """Return (parent object, final attribute name) for a dotted path."""
    parts = dotted.strip().split(".")
    obj = config
    for i, part in enumerate(parts[:-1]):
        if isinstance(obj, ConfigChoice):
            if part == "active":
                obj = obj.active
            elif part in obj.keys():
                obj = obj[part]
            else:
                close = difflib.get_close_matches(part, ["active", *obj.keys()], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise InvalidConfigError(f"unknown config path {dotted!r}: {'.'.join(parts[:i])} has no choice "
                                         f"{part!r}: use active or one of {list(obj.keys())}{hint}")
            continue
        if part.endswith("]") and "[" in part:  # kernel['AL']
            name, key = part[:-1].split("[", 1)
            try:
                key = ast.literal_eval(key)
            except (ValueError, SyntaxError):
                raise InvalidConfigError(f"config path {dotted!r}: the key in {part!r} must be quoted, as in "
                                         f"{name}['{key}']") from None
            parent = getattr(obj, name, None) if isinstance(obj, Config) and name in obj._fields() else None
            if not isinstance(parent, ConfigChoice):
                raise InvalidConfigError(f"unknown config path {dotted!r}: {name!r} is not a field with choices")
            obj = parent[key]
            continue
        if not isinstance(obj, Config) or part not in obj._fields():
            where = ".".join(parts[:i]) or type(config).__name__
            hint = _unknown_field_hint(obj, part) if isinstance(obj, Config) else ""
            raise InvalidConfigError(f"unknown config path {dotted!r}: {where} has no field {part!r}{hint}")
        obj = getattr(obj, part)
    return obj, parts[-1]


def _set_from_dict(config, fresh, d, where):
    """Assign to ``config`` the values of ``d`` (``to_dict``'s) that differ from ``fresh``'s (the defaults)."""
    if not isinstance(d, dict):
        raise InvalidConfigError(f"{where} must be a mapping of fields (Config.to_dict's); got {d!r}")
    for key, value in d.items():
        if key not in config._fields():
            raise InvalidConfigError(f"{where} has no field {key!r}{_unknown_field_hint(config, key)}")
        target = config._values[key]
        if isinstance(target, ConfigChoice):
            if not isinstance(value, dict):
                raise InvalidConfigError(f"{where}.{key} must be a mapping of its choices and 'name'; got {value!r}")
            for name, sub in value.items():
                if name != "name":
                    _set_from_dict(target[name], fresh._values[key][name], sub, f"{where}.{key}[{name!r}]")
            if "name" in value and value["name"] != target.name:
                target.name = value["name"]
            continue
        default = fresh._values[key]
        value = config._fields()[key].coerce(value, f"{where}.{key}")  # ("inf" as a report writes it: a float)
        if value != default:
            setattr(config, key, value)


def _mark_explicit(config, path):
    """Mark the field at ``path`` (``config.kernel['AL'].kernelSize``, ``config.kernel.name``) as set by the user."""
    try:
        parent, attr = _resolve(config, path[len("config."):] if path.startswith("config.") else path)
    except InvalidConfigError:
        parent = attr = None
    if isinstance(parent, ConfigChoice) and attr == "name":
        parent._name_explicit = True
    elif isinstance(parent, Config) and attr in parent._fields():
        parent.__dict__.setdefault("_explicit", set()).add(attr)
    else:
        raise InvalidConfigError(f"explicitFields: {path!r} names no field of the configuration")


def _transplant(dst, src):
    """Give ``dst`` the values and explicit fields of ``src`` (a copy of it), keeping ``dst``'s objects (a caller
    may hold ``config.kernel.active``)."""
    for key, value in src._values.items():
        if isinstance(value, ConfigChoice):
            target = dst._values[key]
            for name in value.keys():
                _transplant(target[name], value[name])
            target._name = value._name
            target._name_explicit = getattr(value, "_name_explicit", False)
        else:
            dst._values[key] = value
    object.__setattr__(dst, "_explicit", set(src.__dict__.get("_explicit", ())))


def _check_not_frozen(config, what):
    if getattr(config, "_frozen", False):
        raise InvalidConfigError(f"{config._path}: the config is frozen; copy it to change it ({what})")


def _apply_mapping(config, mapping, where):
    if not isinstance(mapping, dict):
        raise InvalidConfigError(f"config override {where} must be a table of fields; got {mapping!r}")
    items = mapping.items()
    if isinstance(config, ConfigChoice):  # choose first, so that an 'active' table listed before 'name' follows it
        items = sorted(items, key=lambda kv: kv[0] != "name")
    for key, value in items:
        if isinstance(config, ConfigChoice):
            if key == "name":
                config.name = value
            elif key == "active":
                _apply_mapping(config.active, value, where + ".active")
            else:
                _apply_mapping(config[key], value, f"{where}.{key}")
            continue
        if key not in config._fields():
            raise InvalidConfigError(f"unknown config field {where}.{key}{_unknown_field_hint(config, key)}")
        target = getattr(config, key)
        if isinstance(target, ConfigChoice):
            if not isinstance(value, dict):
                config_choice_name = value
                target.name = config_choice_name
            else:
                _apply_mapping(target, value, f"{where}.{key}")
        else:
            setattr(config, key, value)


def apply_overrides(config, overrides):
    """Apply ``key=value`` strings (dotted paths) to ``config`` in place.

    ``kernel.name=DF``, ``kernel.active.kernelSize=25``, ``kernel.DF.lambdaScaling=1e-3``,
    ``kernel['AL'].alardSigGauss=[1.0, 2.0, 4.5]``, ``doAutoPadPsf=false``.

    Raises
    ------
    InvalidConfigError
        For a malformed override, an unknown path or a bad value.

    Examples
    --------
    >>> config = apply_overrides(ModelPsfMatchConfig(), ["kernel['AL'].alardSigGauss=[1.0, 2.0, 4.5]",
    ...                                                  "doAutoPadPsf=false", "padPsfBy=4"])
    >>> config.kernel["AL"].alardSigGauss, config.doAutoPadPsf, config.padPsfBy
    ([1.0, 2.0, 4.5], False, 4)
    >>> apply_overrides(config, ["kernel.active.kernelSise=25"])
    Traceback (most recent call last):
    ...
    psfmatch.errors.InvalidConfigError: unknown config path 'kernel.active.kernelSise': no field 'kernelSise'; did you mean 'kernelSize', ...? The fields are [...]
    """
    _check_not_frozen(config, "apply_overrides")
    target = config
    config = config.copy()  # (applied to a copy: a failing override leaves the caller's config as it was)
    for text in overrides:
        if "=" not in text:
            raise InvalidConfigError(f"config override {text!r} must look like key=value (e.g. kernel.active.kernelSize=25)")
        key, value = text.split("=", 1)
        parent, attr = _resolve(config, key)
        if isinstance(parent, ConfigChoice):
            if attr != "name":
                raise InvalidConfigError(f"config override {text!r}: set {key.rsplit('.', 1)[0]}.name or a field of .active")
            parent.name = _parse_value(value)
        elif isinstance(parent, Config):
            if attr not in parent._fields():
                raise InvalidConfigError(
                    f"unknown config path {key!r}: no field {attr!r}{_unknown_field_hint(parent, attr)}")
            if isinstance(getattr(parent, attr), ConfigChoice):
                getattr(parent, attr).name = _parse_value(value)
            else:
                setattr(parent, attr, _parse_value(value))
        else:
            raise InvalidConfigError(f"unknown config path {key!r}")
    _transplant(target, config)
    return target


def _refused_exit(code=None):
    """``exit()`` / ``quit()`` inside an override file: raise SystemExit, which :func:`load_overrides` refuses."""
    raise SystemExit(code)


def load_overrides(config, path):
    """Apply an override file: Python (``config.x = ...``, as ``pipetask -C``), TOML or YAML.

    A TOML or YAML file holds the fields at the top level or, all of them,
    under one top-level ``config`` table.  The file is applied to a copy first:
    when it fails, ``config`` is left as it was.

    Raises
    ------
    InvalidConfigError
        If the file is missing, unreadable (a directory, not UTF-8 text), of an
        unknown type, or sets an unknown field or a bad value; or if a Python
        file raises an exception or tries to end the program (``sys.exit()``,
        ``exit()``: a `SystemExit`); a YAML mapping that repeats a key.  The
        message names the file (and, for a Python file, the line).  A
        `KeyboardInterrupt` passes through.
    """
    _check_not_frozen(config, "load_overrides")
    trial = config.copy()
    _load_overrides(trial, path)
    _transplant(config, trial)
    return config


def _line_in(exc, path):
    """The line of ``path`` (a Python override file) that raised ``exc``: its last frame in that file."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _yaml_loader(yaml, path):
    """A safe YAML loader that refuses a mapping repeating a key (PyYAML keeps the last one silently)."""
    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise InvalidConfigError(
                    f"config override file {path!r}: key {key!r} appears twice in one mapping (lines "
                    f"{seen[key] + 1} and {key_node.start_mark.line + 1}); the second would silently replace the "
                    "first: merge them")
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return Loader


def _load_overrides(config, path):
    """:func:`load_overrides` on ``config`` itself."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InvalidConfigError(f"config override file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".py", ".toml", ".yaml", ".yml"):
        raise InvalidConfigError(f"config override file {path!r}: use a .py, .toml, .yaml or .yml file")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InvalidConfigError(f"config override file {path!r} cannot be read: {exc.strerror or exc}") from None
    if ext == ".py":
        try:
            code = compile(raw, path, "exec")  # bytes: the encoding is UTF-8 or the file's coding declaration
        except (SyntaxError, ValueError, UnicodeDecodeError) as exc:
            raise InvalidConfigError(f"config override file {path!r} is not valid Python: {exc}") from None
        try:
            # inf and nan as names too, so that a dump of an infinite threshold loads back; exit() and quit()
            # only raise SystemExit (the interactive builtins would close sys.stdin first)
            exec(code, {"config": config, "__file__": path, "inf": math.inf, "nan": math.nan,
                        "exit": _refused_exit, "quit": _refused_exit})
        except InvalidConfigError as exc:
            line = _line_in(exc, path)
            raise InvalidConfigError(f"config override file {path!r}{f', line {line}' if line else ''}: "
                                     f"{exc}") from None
        except SystemExit as exc:  # sys.exit(), exit(), raise SystemExit: not the file's to decide
            code_text = "" if exc.code is None else repr(exc.code)
            raise InvalidConfigError(
                f"config override file {path!r} tried to end the program: it raised SystemExit({code_text}), as "
                "sys.exit() and exit() do; a config file sets fields (config.x = ...) and must not exit: remove the "
                "call (raise an exception instead to reject a setting)") from None
        except Exception as exc:
            line = _line_in(exc, path)
            raise InvalidConfigError(f"config override file {path!r} failed{f' at line {line}' if line else ''}: "
                                     f"{type(exc).__name__}: {exc}") from exc
        return config
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidConfigError(f"config override file {path!r} is not UTF-8 text ({exc.reason} at byte "
                                 f"{exc.start}): save it as UTF-8") from None
    if ext == ".toml":
        import tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidConfigError(f"config override file {path!r} is not valid TOML: {exc}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise InvalidConfigError("YAML override files need PyYAML: pip install pyyaml") from None
        try:
            data = yaml.load(text, Loader=_yaml_loader(yaml, path)) or {}
        except yaml.YAMLError as exc:
            raise InvalidConfigError(f"config override file {path!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidConfigError(f"config override file {path!r} must hold a table of fields")
    if "config" in data:
        if len(data) > 1:
            others = sorted(str(k) for k in data if k != "config")
            raise InvalidConfigError(
                f"config override file {path!r} has a top-level 'config' table and other top-level keys {others}: "
                "put the fields either all under 'config' or all at the top level")
        data = data["config"]
    try:
        _apply_mapping(config, data, type(config).__name__)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"config override file {path!r}: {exc}") from None
    return config


def iter_fields(config, prefix="config", all_choices=True):
    """Yield ``(path, field, value, explicit)`` for every field of ``config``, depth first, in declaration order.

    ``path`` is written as in a Python override file (``config.kernel['AL'].kernelSize``);
    ``explicit`` tells whether the value was set by the user (:meth:`Config.isExplicit`)
    or differs from the default (that of a new config of the same class).  A
    ``ConfigChoiceField`` yields
    ``(prefix.name.name, field, active name, explicit)`` and then the fields of its
    choices (only the active one unless ``all_choices``).
    """
    fresh = type(config)()
    for name, field in config._fields().items():
        value = config._values[name]
        path = f"{prefix}.{name}"
        if isinstance(value, ConfigChoice):
            explicit = value.isExplicit() if hasattr(value, "isExplicit") else False
            yield f"{path}.name", field, value.name, bool(explicit or value.name != field.default)
            keys = list(value.keys()) if all_choices else [value.name]
            for key in keys:
                yield from iter_fields(value[key], f"{path}[{key!r}]", all_choices)
        else:
            explicit = config.isExplicit(name) if hasattr(config, "isExplicit") else False
            yield path, field, value, bool(explicit or value != fresh._values[name])


def _py_literal(value) -> str:
    """``repr`` of a config value as Python that evaluates back to it (``float('inf')``, not ``inf``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value!r}')"  # 'inf', '-inf' or 'nan'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py_literal(v) for v in value) + "]"
    return repr(value)


def format_config(config, *, all_choices=False, width=100) -> str:
    """The configuration as a Python override file, each field preceded by its doc as a comment.

    Values set explicitly (or different from the defaults) are assignments;
    the others are shown commented out (``#  config.x = default``), so that the
    text, loaded back with ``psfmatch ... -C FILE.py``, gives the same
    configuration *and* the same explicit choices (which ``autoKernel`` honours).
    Without ``all_choices`` the choices not selected (``kernel['DF']`` when
    ``kernel.name`` is ``"AL"``) show only the fields set on them.
    Values are written as Python literals (an infinite float as ``float('inf')``,
    a tuple as a list), so the file runs with plain Python.
    """
    from . import __version__

    lines = [f"# psfmatch {__version__}: configuration of ModelPsfMatchTask; load it back with -C FILE.py",
             "# Lines starting with '#  config.' are defaults, left commented out so that they stay defaults.", ""]
    inactive = ()  # path prefixes of the choices not selected: without all_choices only their set fields
    # the defaults are those of a new config of the same class (setDefaults changes some: DF's kernelBasisSet)
    defaults = (v for _, _, v, _ in iter_fields(type(config)(), all_choices=True))
    for (path, field, value, explicit), default in zip(iter_fields(config, all_choices=True), defaults):
        if not all_choices and path.startswith(inactive) and not explicit:
            continue
        doc = field.doc.strip()
        if isinstance(field, ConfigChoiceField):
            base = path[:-len(".name")]
            inactive += tuple(f"{base}[{k!r}]" for k in field.typemap if k != value)
            doc += " Choices: " + ", ".join(f"{k!r}" for k in field.typemap) + "."
            kind = "choice"
        else:
            kind = field.type_name()
            extra = field.describe()
            if extra:
                doc += f" ({extra})"
            default = list(default) if isinstance(default, tuple) else default
            if explicit and (list(value) if isinstance(value, tuple) else value) != default:
                doc += f" [default {default!r}]"
        for line in textwrap.wrap(f"[{kind}] {doc}", width=width - 2):
            lines.append("# " + line)
        lines.append(f"{'' if explicit else '#  '}{path} = {_py_literal(value)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
