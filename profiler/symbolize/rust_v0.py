"""Rust v0 symbol demangling (``_R...``).

A compact demangler following the grammar in the Rust "v0 symbol format" (RFC 2603):
crate roots, nested paths with their namespaces (closures, shims), inherent and trait
impls, generic arguments with lifetimes, types (basic, references, pointers, arrays,
slices, tuples, fn pointers, ``dyn`` traits), integer/bool/char constants, backrefs and
punycode identifiers.  Output is rustfilt's default form: crate disambiguators are not
printed and integer constants carry no type suffix.  Anything it does not decode (for
example structural constants ``K e/R/A/T/V``, encoding versions) gives None.  Recursion,
output length and binder sizes are bounded.
"""

from __future__ import annotations

__all__ = ["demangle_rust_v0"]


class _Unsupported(Exception):
    """Malformed input or a production this demangler does not decode."""


_BASIC_TYPES = {
    "a": "i8", "b": "bool", "c": "char", "d": "f64", "e": "str", "f": "f32", "h": "u8",
    "i": "isize", "j": "usize", "l": "i32", "m": "u32", "n": "i128", "o": "u128",
    "s": "i16", "t": "u16", "u": "()", "v": "...", "x": "i64", "y": "u64", "z": "!",
    "p": "_",
}
_UNSIGNED_CONSTS = frozenset("htmyoj")
_SIGNED_CONSTS = frozenset("aslxni")
_B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MAX_DEPTH = 150
_MAX_OUTPUT = 16384
_MAX_LIFETIMES = 1024   # lifetimes one binder ("for<'a, ...>") may bind


class _V0:
    """Parses the part of a v0 symbol after ``_R`` and prints it as it goes."""

    def __init__(self, sym: str) -> None:
        self.sym = sym
        self.pos = 0
        self.out: list[str] = []
        self.size = 0
        self.printing = True
        self.depth = 0
        self.lifetimes = 0   # number of lifetimes bound by enclosing binders

    # -- low level --

    def emit(self, text: str) -> None:
        if self.printing:
            self.out.append(text)
            self.size += len(text)
            if self.size > _MAX_OUTPUT:
                raise _Unsupported("output too long")

    def peek(self) -> str:
        return self.sym[self.pos] if self.pos < len(self.sym) else ""

    def next(self) -> str:
        if self.pos >= len(self.sym):
            raise _Unsupported("unexpected end")
        c = self.sym[self.pos]
        self.pos += 1
        return c

    def eat(self, c: str) -> bool:
        if self.pos < len(self.sym) and self.sym[self.pos] == c:
            self.pos += 1
            return True
        return False

    def push(self) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Unsupported("too deep")

    def base62(self) -> int:
        """<base-62-number>: "_" is 0, otherwise digits then "_" is value + 1."""
        if self.eat("_"):
            return 0
        value = 0
        while True:
            c = self.next()
            if c == "_":
                return value + 1
            d = _B62.find(c)
            if d < 0:
                raise _Unsupported("bad base-62 digit")
            value = value * 62 + d

    def opt_base62(self, tag: str) -> int:
        """An optional <tag><base-62-number>: 0 if absent, else the number + 1."""
        if not self.eat(tag):
            return 0
        return self.base62() + 1

    def decimal(self) -> int:
        start = self.pos
        if not self.peek().isdigit():
            raise _Unsupported("expected a decimal number")
        if self.sym[start] == "0":
            self.pos += 1
            return 0
        while self.peek().isdigit():
            self.pos += 1
        return int(self.sym[start:self.pos])

    def ident(self) -> str:
        """<undisambiguated-identifier>, punycode decoded."""
        puny = self.eat("u")
        length = self.decimal()
        self.eat("_")
        end = self.pos + length
        if end > len(self.sym):
            raise _Unsupported("identifier past the end")
        raw = self.sym[self.pos:end]
        self.pos = end
        if not puny:
            return raw
        cut = raw.rfind("_")
        ascii_part, encoded = (raw[:cut], raw[cut + 1:]) if cut >= 0 else ("", raw)
        if not encoded:
            raise _Unsupported("empty punycode")
        text = f"{ascii_part}-{encoded}" if ascii_part else encoded
        try:
            return text.encode("ascii").decode("punycode")
        except (UnicodeError, ValueError) as exc:
            raise _Unsupported("bad punycode") from exc

    def backref(self, fn: str, *args: object) -> None:
        start = self.pos - 1            # position of "B"
        target = self.base62()
        if target >= start:
            raise _Unsupported("forward backref")
        saved = self.pos
        self.pos = target
        self.push()
        getattr(self, fn)(*args)
        self.depth -= 1
        self.pos = saved

    def sep_list(self, fn: str, sep: str, *args: object) -> int:
        count = 0
        while not self.eat("E"):
            if count:
                self.emit(sep)
            getattr(self, fn)(*args)
            count += 1
        return count

    # -- grammar --

    def path(self, in_value: bool) -> None:
        self.push()
        tag = self.next()
        if tag == "C":
            self.opt_base62("s")
            self.emit(self.ident())
        elif tag == "N":
            ns = self.next()
            if not ns.isalpha() or not ns.isascii():
                raise _Unsupported("bad namespace")
            self.path(in_value)
            dis = self.opt_base62("s")
            name = self.ident()
            if ns.isupper():
                kind = {"C": "closure", "S": "shim"}.get(ns, ns)
                self.emit("::{" + kind + (":" + name if name else "") + f"#{dis}" + "}")
            elif name:
                self.emit("::" + name)
        elif tag in "MXY":
            if tag != "Y":
                self.opt_base62("s")
                was, self.printing = self.printing, False
                self.path(False)
                self.printing = was
            self.emit("<")
            self.type_()
            if tag != "M":
                self.emit(" as ")
                self.path(False)
            self.emit(">")
        elif tag == "I":
            self.path(in_value)
            self.emit("::<" if in_value else "<")
            self.sep_list("generic_arg", ", ")
            self.emit(">")
        elif tag == "B":
            self.backref("path", in_value)
        else:
            raise _Unsupported(f"path tag {tag!r}")
        self.depth -= 1

    def lifetime(self, index: int) -> None:
        if index == 0:
            self.emit("'_")
            return
        depth = self.lifetimes - index
        if depth < 0:
            raise _Unsupported("unbound lifetime")
        self.emit("'" + (chr(ord("a") + depth) if depth < 26 else f"_{depth}"))

    def binder(self) -> int:
        """An optional <binder> ("for<'a, ...> "); returns how many lifetimes it binds."""
        count = self.opt_base62("G")
        if count > _MAX_LIFETIMES:  # the loop below runs even when not printing
            raise _Unsupported("too many bound lifetimes")
        if count:
            self.emit("for<")
            for i in range(count):
                if i:
                    self.emit(", ")
                self.lifetimes += 1
                self.lifetime(1)
            self.emit("> ")
        return count

    def generic_arg(self) -> None:
        if self.eat("L"):
            self.lifetime(self.base62())
        elif self.eat("K"):
            self.const()
        else:
            self.type_()

    def type_(self) -> None:
        self.push()
        tag = self.next()
        basic = _BASIC_TYPES.get(tag)
        if basic is not None:
            self.emit(basic)
        elif tag in "RQ":
            self.emit("&")
            if self.eat("L"):
                lt = self.base62()
                if lt:
                    self.lifetime(lt)
                    self.emit(" ")
            if tag == "Q":
                self.emit("mut ")
            self.type_()
        elif tag == "P":
            self.emit("*const ")
            self.type_()
        elif tag == "O":
            self.emit("*mut ")
            self.type_()
        elif tag == "A":
            self.emit("[")
            self.type_()
            self.emit("; ")
            self.const()
            self.emit("]")
        elif tag == "S":
            self.emit("[")
            self.type_()
            self.emit("]")
        elif tag == "T":
            self.emit("(")
            if self.sep_list("type_", ", ") == 1:
                self.emit(",")
            self.emit(")")
        elif tag == "F":
            self.fn_sig()
        elif tag == "D":
            self.dyn_bounds()
        elif tag == "B":
            self.backref("type_")
        else:
            self.pos -= 1
            self.path(False)
        self.depth -= 1

    def fn_sig(self) -> None:
        bound = self.binder()
        is_unsafe = self.eat("U")
        abi = None
        if self.eat("K"):
            if self.eat("C"):
                abi = "C"
            else:
                abi = self.ident().replace("_", "-")
        if is_unsafe:
            self.emit("unsafe ")
        if abi is not None:
            self.emit(f'extern "{abi}" ')
        self.emit("fn(")
        self.sep_list("type_", ", ")
        self.emit(")")
        if not self.eat("u"):
            self.emit(" -> ")
            self.type_()
        self.lifetimes -= bound

    def dyn_bounds(self) -> None:
        self.emit("dyn ")
        bound = self.binder()
        self.sep_list("dyn_trait", " + ")
        self.lifetimes -= bound
        if not self.eat("L"):
            raise _Unsupported("dyn without lifetime")
        lt = self.base62()
        if lt:
            self.emit(" + ")
            self.lifetime(lt)

    def dyn_trait(self) -> None:
        is_open = self.path_open_generics()
        while self.eat("p"):
            self.emit(", " if is_open else "<")
            is_open = True
            self.emit(self.ident() + " = ")
            self.type_()
        if is_open:
            self.emit(">")

    def path_open_generics(self) -> bool:
        """A trait path whose generic list stays open for associated type bindings."""
        if self.eat("B"):
            start = self.pos - 1
            target = self.base62()
            if target >= start:
                raise _Unsupported("forward backref")
            saved, self.pos = self.pos, target
            self.push()
            is_open = self.path_open_generics()
            self.depth -= 1
            self.pos = saved
            return is_open
        if self.eat("I"):
            self.path(False)
            self.emit("<")
            self.sep_list("generic_arg", ", ")
            return True
        self.path(False)
        return False

    def hex_value(self) -> int:
        start = self.pos
        while self.peek() in "0123456789abcdef" and self.peek():
            self.pos += 1
        digits = self.sym[start:self.pos]
        if not self.eat("_"):
            raise _Unsupported("constant without _")
        return int(digits, 16) if digits else 0

    def const(self) -> None:
        self.push()
        tag = self.next()
        if tag == "p":
            self.emit("_")
        elif tag in _UNSIGNED_CONSTS:
            self.emit(str(self.hex_value()))
        elif tag in _SIGNED_CONSTS:
            negative = self.eat("n")
            self.emit(("-" if negative else "") + str(self.hex_value()))
        elif tag == "b":
            value = self.hex_value()
            if value > 1:
                raise _Unsupported("bad bool constant")
            self.emit("true" if value else "false")
        elif tag == "c":
            value = self.hex_value()
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise _Unsupported("bad char constant")
            self.emit(_quote_char(chr(value)))
        elif tag == "B":
            self.backref("const")
        else:
            raise _Unsupported(f"constant tag {tag!r}")
        self.depth -= 1

    def symbol(self) -> str:
        if self.peek().isdigit():
            raise _Unsupported("encoding version")
        self.path(True)
        if self.peek().isupper():            # <instantiating-crate>
            was, self.printing = self.printing, False
            self.path(False)
            self.printing = was
        rest = self.sym[self.pos:]
        if rest and rest[0] not in ".$":
            raise _Unsupported("trailing characters")
        return "".join(self.out)


_CHAR_ESCAPES = {"\t": "\\t", "\r": "\\r", "\n": "\\n", "\\": "\\\\", "'": "\\'", "\0": "\\0"}


def _quote_char(c: str) -> str:
    if c in _CHAR_ESCAPES:
        return f"'{_CHAR_ESCAPES[c]}'"
    if c.isprintable():
        return f"'{c}'"
    return f"'\\u{{{ord(c):x}}}'"


def demangle_rust_v0(name: str) -> str | None:
    """A Rust v0 name (``_R...``) demangled, or None if it is unsupported or malformed."""
    if not name.startswith("_R") or not name[2:3].isalnum() or not name.isascii():
        return None
    try:
        return _V0(name[2:]).symbol()
    except (_Unsupported, RecursionError, ValueError):
        return None
