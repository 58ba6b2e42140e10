"""Speech latency per language on pyttsx3 + espeak-ng: time to first speech of a spoken 6-digit
code, cold and with the digit cache warm, and the real-time factor (render time / audio length)
of a full sentence.

The code's WAV is written atomically and starts with the first digit (no lead-in silence), so the
first audible sample is on disk exactly when the call returns: time to first speech is the time
per render_code call.

    .venv/bin/python benchmarks/bench_speech.py [--seconds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench_common import rate

from accessibility.audio import duration, read_wav, segments
from accessibility.codes import WordCache, render_code
from accessibility.errors import SpeechUnavailable
from accessibility.guidance import Prompt, message
from accessibility.speech import Language, Pyttsx3Engine
from firmware_sim.tokens import audio_reader
from firmware_sim.tokens.otp_token import Model, new_state

CODE = "471902"


def measure(
    engine: Pyttsx3Engine, language: Language, folder: Path, seconds: float, minimum: int
) -> tuple[dict[str, float], dict[str, int]]:
    code_wav = folder / f"code-{language}.wav"

    def cold() -> None:  # a fresh cache: every digit word is synthesized
        render_code(engine, CODE, code_wav, language=language, cache=WordCache())

    warm_cache = WordCache()
    render_code(engine, CODE, code_wav, language=language, cache=warm_cache)

    def warm() -> None:  # every digit word comes from the cache
        render_code(engine, CODE, code_wav, language=language, cache=warm_cache)

    cold_per_s, cold_n = rate(cold, seconds, minimum)
    warm_per_s, warm_n = rate(warm, seconds, minimum)
    sample_rate, samples = read_wav(code_wav)
    if not segments(samples, sample_rate):
        raise SystemExit(f"the {language} code rendered as silence")

    # The reader's red key, as `akkreditiv sim press red` does it: load the reader's state,
    # compute TOTP, speak the code (a new reader has a cold digit cache), save the settings.
    reader_state = folder / f"reader-{language}.json"
    if not reader_state.exists():
        audio_reader.new_reader(reader_state, new_state(Model.AUDIO), language)

    def press_red() -> None:
        reader = audio_reader.AudioReader(reader_state, engine, folder / f"audio-{language}")
        reader.press({audio_reader.Key.RED})

    press_per_s, press_n = rate(press_red, seconds, minimum)

    sentence = message(Prompt.WRONG_PIN, language, tries_left=2)
    sentence_wav = folder / f"sentence-{language}.wav"

    def speak_sentence() -> None:
        engine.render(sentence, sentence_wav, language=language, rate=175, volume=1.0, pitch=50)

    sentence_per_s, sentence_n = rate(speak_sentence, seconds, minimum)
    sentence_rate, sentence_samples = read_wav(sentence_wav)
    sentence_s = duration(sentence_samples, sentence_rate)
    figures = {
        "key_press_to_first_speech_ms": round(1000 / press_per_s, 2),
        "cold_time_to_first_speech_ms": round(1000 / cold_per_s, 2),
        "warm_time_to_first_speech_ms": round(1000 / warm_per_s, 3),
        "code_audio_s": round(len(samples) / sample_rate, 3),
        "sentence_render_ms": round(1000 / sentence_per_s, 2),
        "sentence_audio_s": round(sentence_s, 3),
        "sentence_real_time_factor": round(1 / sentence_per_s / sentence_s, 5),
    }
    return figures, {"press": press_n, "cold": cold_n, "warm": warm_n, "sentence": sentence_n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--minimum", type=int, default=10, help="operations per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()

    engine = Pyttsx3Engine()
    start = time.perf_counter()
    try:
        for language in Language:
            engine.voice_id(language)  # starts pyttsx3 + espeak-ng and checks both voices
    except SpeechUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    start_ms = round(1000 * (time.perf_counter() - start), 2)
    figures: dict[str, dict[str, float]] = {}
    operations: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for language in Language:
            figures[language.value], operations[language.value] = measure(
                engine, language, Path(folder), args.seconds, args.minimum
            )

    if args.json:
        print(
            json.dumps({"engine_start_ms": start_ms, **figures, "operations": operations}, indent=2)
        )
        return 0
    print(f"engine start (pyttsx3 + espeak-ng, both voices): {start_ms:.2f} ms")
    print(f"{'':34}{'da':>12}{'en':>12}")
    rows = (
        ("reader key press to first speech", "key_press_to_first_speech_ms", "ms"),
        ("first speech, 6-digit code, cold", "cold_time_to_first_speech_ms", "ms"),
        ("first speech, 6-digit code, warm", "warm_time_to_first_speech_ms", "ms"),
        ("code audio length", "code_audio_s", "s"),
        ("sentence render time", "sentence_render_ms", "ms"),
        ("sentence audio length", "sentence_audio_s", "s"),
        ("sentence real-time factor", "sentence_real_time_factor", ""),
    )
    for label, key, unit in rows:
        cells = "".join(f"{figures[lang.value][key]:>9} {unit:<2}" for lang in Language)
        print(f"{label:34}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
