"""Streaming early detection: replay DAG runs in event time (``llmad replay``) and tail a live feed (``llmad watch``).

Event model (``reveal="events"``). Every timestamp of a job (ready, submit, stage-in start/end, execute start/end,
stage-out start/end, post-script start/end) is an event. A field becomes known at its *reveal time*: a timestamp at
itself; a delay once both of its endpoints have passed (``runtime`` at ``execute_end``, ``queue_delay`` at
``execute_start``, ...); transfer sizes when their transfer ends; the kickstart record (cpu time, I/O counters) when
execution ends; the host when execution starts; the DAG's static fields (transformation, type) when the job appears.
A field whose endpoint is missing is revealed only at the job's end. Before a field is known it is NaN, exactly as
:func:`make_partial` produces it (the SFT ``--prefix-augment`` recipe trains on the same kind of rows).

Peer context (``ctx_*``, ``llmad.data.context``) is causal and incremental: a job's peer features are recomputed at
each of its own events from the peers' fields known at that instant (medians over sorted lists), so at the moment a
job finishes they equal ``add_context_features(causal=True)`` up to ties. A job is rescored only at its own events
and only when its detector input changed (an event before any of the detector's time-revealed inputs is known is
counted but not scored: the score would only be the model's prior for an empty job); identical inputs (across jobs
too) are scored once (a bounded cache), and
scoring is batched over a run (``batch="run"``, max speed) or per time step (``batch="step"``, paced replay, watch).

SFT models score through a backend (``llmad.detectors.sft.fast``, ``--backend``): ``auto`` picks bf16 autocast on
CPUs with native bf16 (AMX / AVX512-BF16), else ONNX Runtime int8 when installed, else torch fp32; the cache makes
the model see ~0.33 sentences per event on casa_nowcast_full, so the model's sentences/s sets the replay's speed.

``reveal="features"`` is the LLM_AD paper's online study (Jin et al., SC'24): the job sentence grows one feature at
a time in the paper's feature order (T1 = wms_delay ... T9 = cpu time) and the first step at which the prediction is
right is recorded. llmad differs in that unrevealed features are NaN (rendered as missing) rather than cut from the
sentence, so every detector sees the same partial rows.

Alerts: a job alerts the first time its score reaches the threshold (``alert="threshold"``) or when k of its last n
observations did (``alert="k-of-n"``). The threshold comes from the model (chosen on validation when it was fitted)
or is re-chosen on a replay of the validation runs (``threshold="validation"``: the per-job statistic that decides
an alert, i.e. the max score or the best k-th largest score over n consecutive observations). Never on test.

Modules: ``config`` (StreamConfig), ``context`` (incremental causal peer features, what a detector reads),
``scorer`` (batched scoring with a bounded cache), ``alerts`` (AlertPolicy), ``replay`` (the engine),
``sources`` (Flow-Bench runs one at a time), ``watch`` (live feeds). The reveal model is ``llmad.data.reveal``, the
early-detection metrics ``llmad.metrics.early``, and the run layer (open a model, write a run folder)
``llmad.api.replay``.
"""

from llmad.stream.alerts import AlertPolicy
from llmad.stream.config import StreamConfig, parse_speed
from llmad.stream.context import PeerContext, detector_inputs, detector_uses_context
from llmad.stream.replay import (ReplayResult, RunOutcome, choose_stream_threshold, replay, replay_features_run,
                                 replay_run)
from llmad.stream.scorer import CachedScorer
from llmad.stream.sources import iter_runs, list_run_members, split_run_ids
from llmad.stream.watch import Watcher, feed_records, write_feed

__all__ = ["AlertPolicy", "CachedScorer", "ReplayResult", "PeerContext", "RunOutcome", "StreamConfig", "Watcher",
           "choose_stream_threshold", "detector_inputs", "detector_uses_context", "feed_records", "iter_runs",
           "list_run_members", "parse_speed", "replay", "replay_features_run", "replay_run", "split_run_ids",
           "write_feed"]
