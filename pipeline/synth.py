"""In-process speech synthesis with espeak-ng (the library the espeakng-loader wheel ships).

Called through ctypes in synchronous mode: espeak hands 16-bit samples to a callback, so no
audio device, subprocess or network is involved, and the same text, voice and parameters
give the same samples.
"""

from __future__ import annotations

import ctypes
import threading

import espeakng_loader
import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


class SynthError(RuntimeError):
    pass


def synthesize_batch(utterances: list[tuple[str, str, int, int, int]]) -> list[np.ndarray]:
    """Synthesize (voice, text, rate, pitch, range) utterances in order.

    espeak-ng keeps static state between utterances (noise generators, phase) that neither
    espeak_Terminate nor a seed resets, so output depends on what the process said before.
    Run each batch in a fresh process (see pipeline.datasets.tts_digits) and the bytes are
    the same on every run.
    """
    engine = Espeak.get()
    return [engine.say(text, voice, rate=rate, pitch=pitch, pitch_range=pitch_range)
            for voice, text, rate, pitch, pitch_range in utterances]


class Espeak:
    """One espeak-ng engine per process (the C library keeps global state)."""

    _instance: Espeak | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate <= 0:
            raise SynthError(f"espeak_Initialize failed ({self.sample_rate})")
        # Noise sources (whisper, breathy variants) draw from libc rand(), which espeak seeds
        # from the clock at start-up: fix both seeds so the bytes repeat across processes.
        ctypes.CDLL(None).srand(0)
        if hasattr(self.lib, "espeak_ng_SetRandSeed"):
            self.lib.espeak_ng_SetRandSeed(0)
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, events):  # signature fixed by espeak
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: espeak holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]

    @classmethod
    def get(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def say(self, text: str, voice: str, rate: int = 175, pitch: int = 50,
            pitch_range: int = 50) -> np.ndarray:
        """Synthesize `text`; returns int16 samples at `self.sample_rate`."""
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SynthError(f"espeak-ng has no voice {voice!r}")
            for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range)):
                self.lib.espeak_SetParameter(PARAM[name], int(value), 0)
            self._chunks = []
            data = text.encode() + b"\0"
            err = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8,
                                        None, None)
            self.lib.espeak_Synchronize()
            if err != 0:
                raise SynthError(f"espeak_Synth failed ({err}) for {text!r} in {voice}")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples.astype(np.int16)


def main() -> None:
    """``python -m pipeline.synth OUT.npz < utterances.json``: one batch in a fresh process."""
    import json
    import sys

    utterances = [tuple(u) for u in json.load(sys.stdin)]
    waves = synthesize_batch(utterances)
    np.savez(sys.argv[1], *waves)


if __name__ == "__main__":
    main()
