"""The WebAssembly glue: converts the WIT types to plain ones and calls `tagger.run`."""

import tagger
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types


class Runner(exports.Runner):
    """The `runner` export of world `lumilio:pipeline/stage@0.2.0`."""

    def process(self, input: types.Input, file: types.File) -> types.Output:
        # The rules look at the name and at facts only: `file` is never read,
        # so no byte of the asset is copied into this stage.
        facts = [(f.key, f.value.value) for f in input.facts]
        try:
            key, tags = tagger.run(input.config, input.asset.file_name, facts)
        except tagger.ConfigError as e:
            # Bad config: the step is broken, not the asset, so `failed` (retryable).
            raise Err(types.StageError_Failed(str(e)))
        host.log(host.LogLevel.DEBUG, f"{input.asset.file_name}: tags {tags}")
        out = [types.Fact(key, types.FactValue_Text(", ".join(tags)))] if tags else []
        return types.Output(facts=out, renditions=[], warnings=[])
