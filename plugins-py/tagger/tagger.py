"""Rules that turn an asset's file name (or an earlier fact) into tags.

Plain Python with no WIT imports, so `python3 -m unittest` runs it natively;
`app.py` is the WebAssembly glue that calls `run`.
"""

import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Pattern, Sequence, Tuple

# The fact a tag list is stored under unless the config says `key = ...`.
DEFAULT_KEY = "tags"
# Keys are lower snake_case, as the other stages' facts (wit/README.md).
_KEY = re.compile(r"^[a-z][a-z0-9_.]*$")
_RULE_KEYS = {"tag", "glob", "regex", "fact", "case_sensitive"}


class ConfigError(Exception):
    """The stage's config is malformed: the self-hoster's mistake, not the asset's."""


@dataclass
class Rule:
    """One rule: where to look, the pattern, and the tag it gives."""

    index: int
    tag: str
    pattern: Pattern[str]
    # None: the file name; else the key of an earlier stage's fact.
    fact: Optional[str]
    # A regex rule's tag may use its groups ({1}, {name}); a glob's is literal.
    expands: bool


def _where(i: int) -> str:
    return f"tagger: config rules[{i}]"


def _rule(i: int, raw: object) -> Rule:
    where = _where(i)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} is {json.dumps(raw)}; expected a table such as "
                          '{ glob = "Screenshot*", tag = "screenshot" }')
    unknown = sorted(set(raw) - _RULE_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}; "
                          f"expected {', '.join(sorted(_RULE_KEYS))}")
    tag = raw.get("tag")
    if not isinstance(tag, str) or not tag.strip():
        raise ConfigError(f'{where}.tag is missing or empty; give the tag to add, e.g. tag = "screenshot"')
    if "," in tag:
        raise ConfigError(f"{where}.tag = {json.dumps(tag)} has a comma, which separates tags in the "
                          "tags fact; use one rule per tag")
    case_sensitive = raw.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise ConfigError(f"{where}.case_sensitive = {json.dumps(case_sensitive)}; expected true or false")
    flags = 0 if case_sensitive else re.IGNORECASE
    has_glob, has_regex = "glob" in raw, "regex" in raw
    if has_glob == has_regex:
        raise ConfigError(f"{where} needs exactly one of glob or regex (it has "
                          f"{'both' if has_glob else 'neither'})")
    if has_glob:
        glob = raw["glob"]
        if not isinstance(glob, str):
            raise ConfigError(f"{where}.glob = {json.dumps(glob)}; expected a string such as \"IMG_*.HEIC\"")
        pattern = re.compile(fnmatch.translate(glob), flags)
    else:
        regex = raw["regex"]
        if not isinstance(regex, str):
            raise ConfigError(f"{where}.regex = {json.dumps(regex)}; expected a string")
        try:
            pattern = re.compile(regex, flags)
        except re.error as e:
            raise ConfigError(f"{where}.regex = {json.dumps(regex)} is not a valid regular expression: {e}")
    fact = raw.get("fact")
    if fact is not None and (not isinstance(fact, str) or not _KEY.match(fact)):
        raise ConfigError(f"{where}.fact = {json.dumps(fact)}; expected the key of an earlier "
                          'stage\'s fact, such as "make" or "model"')
    return Rule(index=i, tag=tag.strip(), pattern=pattern, fact=fact, expands=has_regex)


def parse_config(config: Sequence[Tuple[str, str]]) -> Tuple[str, List[Rule]]:
    """The fact key and the rules from the stage's `config` pairs.

    `rules` arrives as JSON (an array in pipeline.toml); `key` as plain text.
    """
    values: Dict[str, str] = dict(config)
    unknown = sorted(set(values) - {"rules", "key"})
    if unknown:
        raise ConfigError(f"tagger: unknown config key(s) {', '.join(unknown)}; expected rules and key")
    key = values.get("key", DEFAULT_KEY)
    if not _KEY.match(key):
        raise ConfigError(f"tagger: config key = {json.dumps(key)}; expected a lower snake_case fact key "
                          'such as "tags"')
    if "rules" not in values:
        raise ConfigError('tagger: config rules is missing; add rules = [{ glob = "Screenshot*", '
                          'tag = "screenshot" }] to the stage\'s config')
    try:
        raw = json.loads(values["rules"])
    except ValueError:
        raise ConfigError(f"tagger: config rules = {values['rules']!r} is not an array of tables; "
                          'write rules = [{ glob = "...", tag = "..." }]')
    if not isinstance(raw, list):
        raise ConfigError(f"tagger: config rules is {type(raw).__name__}-valued; expected an array of tables")
    return key, [_rule(i, r) for i, r in enumerate(raw)]


def fact_text(value: object) -> str:
    """A fact value as the text a pattern is matched against."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def split_tags(text: str) -> List[str]:
    """The tags in a `tags` fact's text (comma-separated)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def apply(rules: Sequence[Rule], file_name: str, facts: Dict[str, object]) -> List[str]:
    """The tags the rules give, in rule order, each once."""
    tags: List[str] = []
    for rule in rules:
        if rule.fact is None:
            subject = file_name
        elif rule.fact in facts:
            subject = fact_text(facts[rule.fact])
        else:
            continue
        # A glob matches the whole text; a regex anywhere in it (anchor with ^ and $).
        m = rule.pattern.search(subject) if rule.expands else rule.pattern.fullmatch(subject)
        if m is None:
            continue
        tag = rule.tag
        if rule.expands:
            try:
                tag = tag.format(m.group(0), *m.groups(""), **m.groupdict(""))
            except (IndexError, KeyError) as e:
                raise ConfigError(f"{_where(rule.index)}.tag = {json.dumps(rule.tag)} names group {e}, "
                                  "which its regex does not have")
            # A captured comma would split the tag in two.
            tag = tag.replace(",", " ").strip()
        if tag and tag not in tags:
            tags.append(tag)
    return tags


def run(config: Sequence[Tuple[str, str]], file_name: str,
        facts: Sequence[Tuple[str, object]]) -> Tuple[str, List[str]]:
    """The fact key and the asset's tags: earlier stages' tags under that key, then the rules'.

    `facts` are the earlier stages' facts in pipeline order (the last with a key wins).
    """
    key, rules = parse_config(config)
    known = dict(facts)
    tags = split_tags(fact_text(known[key])) if key in known else []
    for t in apply(rules, file_name, known):
        if t not in tags:
            tags.append(t)
    return key, tags
