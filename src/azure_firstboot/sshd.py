"""sshd_config as sshd reads it, as pure functions: which value of a setting
takes effect, and whether the user step's drop-in decides it.

sshd takes the first value of a keyword it meets (keywords in any case,
"Keyword value" or "Keyword=value"); ``Include`` is expanded where it stands,
each pattern a glob(3) (relative to /etc/ssh, matches sorted, a pattern that
matches nothing is fine), up to 16 levels deep; lines after ``Match`` apply
only to matching connections, up to the next ``Match`` or the end of the file
(a Match in an included file ends with that file).  Lines in Match blocks are
left out of the global order here (reported apart).

Nothing here reads a file: ``evaluate`` takes the texts it has been given
and says which files and directories it still needs; ``resolve`` asks the
caller's read and listdir functions for those (the user step: the tree's
files; ``check``: its snapshot of the image) and asks again, bounded.  No ``re``,
no ``fnmatch`` (it imports ``re``): the boot path stays light.
"""

SSHD_DIR = "/etc/ssh"
MAIN = SSHD_DIR + "/sshd_config"
MAX_DEPTH = 16        # sshd's own limit (SERVCONF_MAX_DEPTH)
MAX_FILES = 256       # files read for one answer
MAX_SIZE = 1048576    # bytes per file
DEFAULTS = {"passwordauthentication": "yes", "kbdinteractiveauthentication": "yes"}
ALIASES = {"challengeresponseauthentication": "kbdinteractiveauthentication"}  # OpenSSH >= 8.7


class Unreadable(object):
    """Stands for a file that exists but could not be read (``why``)."""

    __slots__ = ("why",)

    def __init__(self, why):
        self.why = why


class Result(object):
    """values: {keyword: (value, path, line number)} (first one wins, Match
    blocks left out); in_match: {keyword: [(value, path, line)]};
    needs: paths of files ("f", path) and directories ("d", path) not given
    yet; problem: why the order cannot be told (too deep, unreadable...)."""

    __slots__ = ("values", "in_match", "needs", "problem", "files", "read")

    def __init__(self):
        self.values, self.in_match, self.needs, self.problem, self.files = {}, {}, set(), None, 0
        self.read = []  # the files sshd reads, in order


def words(line):
    """One line -> [keyword, arg...] as sshd splits it: the keyword ends at
    whitespace or one '=' ("Keyword value", "Keyword=value", "Keyword =
    value"); the arguments are split on whitespace, quotes group, a
    backslash escapes a quote, a backslash or a space, and a word that
    starts with '#' ends the line.  [] for a blank or comment line."""
    text = line.strip(" \t\r\f\v")
    if not text or text[0] == "#":
        return []
    i = 0
    while i < len(text) and text[i] not in " \t=":
        i += 1
    keyword, rest = text[:i], text[i:]
    equals = rest.startswith("=")
    rest = rest[1:].lstrip(" \t")
    if not equals and rest.startswith("="):
        rest = rest[1:].lstrip(" \t")
    args, word, in_word, quote, k = [], [], False, None, 0
    while k < len(rest):
        c = rest[k]
        nxt = rest[k + 1] if k + 1 < len(rest) else ""
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and nxt in ("\\", quote):
                word.append(nxt)
                k += 1
            else:
                word.append(c)
        elif c in " \t":
            if in_word:
                args.append("".join(word))
                word, in_word = [], False
        elif c == "#" and not in_word:
            break
        elif c in "\"'":
            quote, in_word = c, True
        elif c == "\\" and nxt and nxt in "\\\"' ":
            word.append(nxt)
            in_word = True
            k += 1
        else:
            word.append(c)
            in_word = True
        k += 1
    if in_word:
        args.append("".join(word))
    return [keyword] + args


def _match(pattern, name):
    """glob(3) matching of one path component: *, ?, [...] ([!...] and [^...]
    negate, a-z ranges); a leading '.' is matched only by a literal '.'."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return _match_at(pattern, 0, name, 0)


def _match_at(p, i, s, j):
    while i < len(p):
        c = p[i]
        if c == "*":
            while i < len(p) and p[i] == "*":
                i += 1
            if i == len(p):
                return True
            return any(_match_at(p, i, s, k) for k in range(j, len(s) + 1))
        if j >= len(s):
            return False
        if c == "?":
            i, j = i + 1, j + 1
            continue
        if c == "[":
            end = p.find("]", i + 3 if i + 1 < len(p) and p[i + 1] in "!^" else i + 2)
            if end > 0:
                body = p[i + 1:end]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                hit, k = False, 0
                while k < len(body):
                    if k + 2 < len(body) and body[k + 1] == "-":
                        hit = hit or body[k] <= s[j] <= body[k + 2]
                        k += 3
                    else:
                        hit = hit or body[k] == s[j]
                        k += 1
                if hit == negate:
                    return False
                i, j = end + 1, j + 1
                continue
        if c != s[j]:
            return False
        i, j = i + 1, j + 1
    return j == len(s)


def _magic(part):
    return any(c in part for c in "*?[")


def expand(pattern, listings, needs):
    """An Include pattern -> the paths sshd would read, sorted as glob(3)
    sorts them (a literal path as it is: absent, it is skipped when read);
    adds directories whose listing is not known yet to ``needs``."""
    if not pattern or pattern.startswith("~"):
        return []  # sshd does not expand '~' here: a path relative to its cwd, none
    if not pattern.startswith("/"):
        pattern = SSHD_DIR + "/" + pattern
    parts = [p for p in pattern.split("/") if p]
    found = [""]
    for part in parts:
        if not _magic(part):
            found = [base + "/" + part for base in found]
            continue
        nxt = []
        for base in found:
            names = listings.get(base or "/", False)
            if names is False:
                needs.add(("d", base or "/"))
                continue
            nxt += [base + "/" + name for name in sorted(names or ()) if _match(part, name)]
        found = nxt
    return sorted(found) if any(_magic(p) for p in parts) else found


def evaluate(files, listings, keywords, main=MAIN):
    """files: {path: text, None (absent) or Unreadable}; listings: {directory:
    [names] or None (absent)}.  -> Result for the given keywords (lower
    case; aliases folded)."""
    result = Result()
    _walk(main, files, listings, keywords, result, 0, False)
    return result


def resolve(files, read, listdir, keywords, main=MAIN):
    """evaluate() until it needs nothing more: each file it asks for comes
    from ``read(path)`` (text, None when absent, or Unreadable), each
    directory from ``listdir(path)`` (names, or None when absent); bounded
    by MAX_DEPTH rounds.  ``files`` holds what the caller knows already
    (e.g. a drop-in not written yet)."""
    files = dict(files)
    listings = {}
    for _ in range(2 * MAX_DEPTH + 4):
        result = evaluate(files, listings, keywords, main)
        if result.problem or not result.needs:
            return result
        for kind, path in sorted(result.needs):
            if kind == "f":
                files[path] = read(path)
            else:
                listings[path] = listdir(path)
    result.problem = "Include too deep or too many files"
    return result


def _walk(path, files, listings, keywords, result, depth, in_match):
    if result.problem:
        return
    if depth > MAX_DEPTH:
        result.problem = "Include nested more than %d deep at %s" % (MAX_DEPTH, path)
        return
    result.files += 1
    if result.files > MAX_FILES:
        result.problem = "more than %d files included" % MAX_FILES
        return
    if path not in files:
        result.needs.add(("f", path))
        return
    text = files[path]
    if text is None:
        return
    if isinstance(text, Unreadable):
        result.problem = "cannot read %s: %s" % (path, text.why)
        return
    result.read.append(path)
    for number, line in enumerate(text.split("\n"), 1):
        args = words(line)
        if not args:
            continue
        key = args[0].lower()
        key = ALIASES.get(key, key)
        if key == "match":
            in_match = True
        elif key == "include":
            for pattern in args[1:]:
                for included in expand(pattern, listings, result.needs):
                    _walk(included, files, listings, keywords, result, depth + 1, in_match)
                    if result.problem:
                        return
        elif key in keywords and len(args) >= 2:
            value = (args[1].lower(), path, number)
            if in_match:
                result.in_match.setdefault(key, []).append(value)
            elif key not in result.values:
                result.values[key] = value


def verdict(result, dropin, password_auth):
    """Does the drop-in (``dropin``, setting both keywords to yes/no as
    ``password_auth``) decide password logins?  -> (failure or None, takes
    effect: bool, notes [one line each]).

    A failure (the user step fails with it): password logins were asked for
    and sshd takes PasswordAuthentication no from an earlier line (or the
    order cannot be told); key-only logins were asked for and an earlier line
    says yes to PasswordAuthentication or KbdInteractiveAuthentication."""
    wanted = "yes" if password_auth else "no"
    if result.problem:
        reason = "cannot tell whether sshd reads %s: %s" % (dropin, result.problem)
        if password_auth:
            return "password logins were asked for, but %s" % reason, False, []
        return None, False, [reason]
    notes = []
    ours = True
    for key, shown in (("passwordauthentication", "PasswordAuthentication"),
                       ("kbdinteractiveauthentication", "KbdInteractiveAuthentication")):
        got = result.values.get(key)
        for value, path, line in result.in_match.get(key, [])[:1]:
            notes.append("a Match block sets %s %s at %s:%d (for the connections it matches)" % (
                shown, value, path, line))
        if got is not None and got[1] == dropin:
            continue
        ours = False
        value = got[0] if got else DEFAULTS[key]
        where = "%s:%d" % (got[1], got[2]) if got else "sshd's default (%s is not included)" % dropin
        if value == wanted:
            notes.append("sshd already takes %s %s from %s" % (shown, value, where))
            continue
        if password_auth and key == "passwordauthentication":
            return ("password logins were asked for (disablePasswordAuthentication false), but sshd "
                    "takes PasswordAuthentication %s from %s, before %s" % (value, where, dropin)), False, notes
        if not password_auth and got is not None:
            return ("key-only logins were asked for (disablePasswordAuthentication true), but sshd "
                    "takes %s %s from %s, before %s" % (shown, value, where, dropin)), False, notes
        notes.append("sshd takes %s %s from %s: %s %s does not take effect" % (
            shown, value, where, shown, wanted))
    return None, ours, notes
