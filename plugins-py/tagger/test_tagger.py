"""Native unit tests of the rules (`python3 -m unittest`, run by scripts/componentize-py.sh)."""

import json
import unittest

import tagger
from tagger import ConfigError


def cfg(rules, **extra):
    return [("rules", json.dumps(rules))] + [(k, v) for k, v in extra.items()]


class Rules(unittest.TestCase):
    def test_glob_matches_the_whole_name_ignoring_case(self):
        rules = [{"glob": "Screenshot*", "tag": "screenshot"}, {"glob": "*.heic", "tag": "heic"}]
        self.assertEqual(tagger.run(cfg(rules), "screenshot_2024.png", []), ("tags", ["screenshot"]))
        self.assertEqual(tagger.run(cfg(rules), "IMG_0001.HEIC", []), ("tags", ["heic"]))
        # Anchored: a glob is not a substring search.
        self.assertEqual(tagger.run(cfg(rules), "my Screenshot.png", []), ("tags", []))

    def test_case_sensitive_when_asked(self):
        rules = [{"glob": "IMG_*", "tag": "camera", "case_sensitive": True}]
        self.assertEqual(tagger.run(cfg(rules), "img_1.jpg", [])[1], [])
        self.assertEqual(tagger.run(cfg(rules), "IMG_1.jpg", [])[1], ["camera"])

    def test_regex_searches_and_fills_groups(self):
        rules = [{"regex": r"^(\d{4})-(?P<month>\d{2})", "tag": "year-{1}"},
                 {"regex": r"^(\d{4})-(?P<month>\d{2})", "tag": "month-{month}"},
                 {"regex": "holiday", "tag": "{0}"}]
        self.assertEqual(tagger.run(cfg(rules), "2024-07-13 Holiday.jpg", [])[1],
                         ["year-2024", "month-07", "Holiday"])

    def test_fact_rules_match_earlier_facts_and_skip_absent_ones(self):
        rules = [{"fact": "make", "glob": "apple", "tag": "iphone"},
                 {"fact": "iso", "regex": "^[0-9]{4,}$", "tag": "high-iso"},
                 {"fact": "model", "glob": "*", "tag": "has-model"}]
        facts = [("make", "Apple"), ("iso", 3200), ("make", "Apple")]
        self.assertEqual(tagger.run(cfg(rules), "x.jpg", facts)[1], ["iphone", "high-iso"])

    def test_earlier_tags_are_kept_and_nothing_repeats(self):
        rules = [{"glob": "*.jpg", "tag": "jpeg"}, {"glob": "*", "tag": "jpeg"}]
        key, tags = tagger.run(cfg(rules, key="labels"), "a.jpg", [("labels", "family, jpeg")])
        self.assertEqual((key, tags), ("labels", ["family", "jpeg"]))

    def test_a_captured_comma_does_not_split_a_tag(self):
        rules = [{"regex": "^(.*)\\.jpg$", "tag": "{1}"}]
        self.assertEqual(tagger.run(cfg(rules), "a,b.jpg", [])[1], ["a b"])


class BadConfig(unittest.TestCase):
    def assert_error(self, config, *words):
        with self.assertRaises(ConfigError) as e:
            tagger.run(config, "a.jpg", [])
        for w in words:
            self.assertIn(w, str(e.exception))

    def test_each_mistake_names_its_key(self):
        self.assert_error([], "rules is missing")
        self.assert_error([("rules", "not json")], "rules", "not an array")
        self.assert_error([("rules", "{}")], "expected an array")
        self.assert_error(cfg(["x"]), "rules[0]", "expected a table")
        self.assert_error(cfg([{"glob": "*"}]), "rules[0].tag")
        self.assert_error(cfg([{"tag": "x"}]), "rules[0]", "neither")
        self.assert_error(cfg([{"tag": "x", "glob": "*", "regex": "."}]), "both")
        self.assert_error(cfg([{"tag": "x", "regex": "("}]), "rules[0].regex", "not a valid regular expression")
        self.assert_error(cfg([{"tag": "a,b", "glob": "*"}]), "rules[0].tag", "comma")
        self.assert_error(cfg([{"tag": "x", "glob": "*", "colour": 1}]), "unknown key", "colour")
        self.assert_error(cfg([{"tag": "x", "glob": "*", "fact": "Make"}]), "rules[0].fact")
        self.assert_error(cfg([{"tag": "x", "glob": "*", "case_sensitive": "yes"}]), "case_sensitive")
        self.assert_error(cfg([], key="Tags!"), "config key")
        self.assert_error(cfg([]) + [("rule", "[]")], "unknown config key", "rule")
        self.assert_error(cfg([{"tag": "{2}", "regex": "(a)"}]), "rules[0].tag", "group")


if __name__ == "__main__":
    unittest.main()
