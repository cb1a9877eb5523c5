"""Runs in this process hold no step's output past its write: the tables are in Delta already."""

import gc
import weakref

import dagster as dg

from pipelines.runs import execute_in_process


class Table:
    """A stand-in for a frame: weakly referenceable, so the test sees when it is freed."""


written: list[weakref.ref] = []


class KeepNothing(dg.IOManager):
    def handle_output(self, context: dg.OutputContext, obj: Table) -> None:
        written.append(weakref.ref(obj))

    def load_input(self, context: dg.InputContext) -> Table:
        return Table()


@dg.asset
def first() -> Table:
    return Table()


@dg.asset
def second(first: Table) -> Table:
    return Table()


def job() -> dg.JobDefinition:
    definitions = dg.Definitions(
        assets=[first, second],
        jobs=[dg.define_asset_job("both")],
        resources={"io_manager": KeepNothing()},
    )
    return definitions.resolve_job_def("both")


def test_outputs_are_freed_while_the_result_is_held():
    written.clear()
    with dg.instance_for_test() as instance:
        result = execute_in_process(
            job(),
            run_config={},
            instance=instance,
            keys=[dg.AssetKey("first"), dg.AssetKey("second")],
            tags={"autointerp/command": "test"},
        )
        gc.collect()
        assert result.success and len(written) == 2
        assert [ref() for ref in written] == [None, None]
        run = instance.get_run_by_id(result.run_id)
        assert run.tags["autointerp/command"] == "test"
        assert run.asset_selection == {dg.AssetKey("first"), dg.AssetKey("second")}
        # Dagster's own execute_in_process keeps them: what this runner exists to avoid.
        written.clear()
        kept = job().execute_in_process(instance=instance)
        gc.collect()
        assert kept.success and all(ref() is not None for ref in written)


def test_a_selection_runs_only_its_assets():
    written.clear()
    with dg.instance_for_test() as instance:
        result = execute_in_process(
            job(), run_config={}, instance=instance, keys=[dg.AssetKey("second")], tags={}
        )
        assert result.success
        materialized = {e.asset_key for e in result.get_asset_materialization_events()}
        assert materialized == {dg.AssetKey("second")}
