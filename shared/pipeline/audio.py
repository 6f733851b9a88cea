"""The film's soundtrack: the voices on their timeline, a music bed ducking under them, and
broadcast loudness (-14 LUFS integrated, true peak under -1 dBTP after the AAC encode).

Three short ffmpeg passes over PCM (about 0.3 s of CPU for a 30 s film):
1. prepare: the voices padded and concatenated (mono) and the music bed cut to the film's
   length with its fades (stereo), both written as float WAV while ebur128 measures them;
2. mix: the voice brought to the target loudness and levelled by a compressor, the bed to
   BED_BELOW_VOICE_LU under it, ducking under the voice (`sidechaincompress` keyed by the
   voice); their sum is measured by ebur128;
3. finish: one gain to the target and a look-ahead limiter for the peaks, to 16-bit PCM.

Output: 44.1 kHz (the renderer's AUDIO_RATE), always stereo with the voice centred, also with
MUSIC=off: a mono file is played on both speakers, 3 dB louder than ebur128 measures it, and
in stereo each channel keeps 3 dB more headroom under the peak limit.

The generated bed is an ambient pad: sine chords (root, third, fifth, ninth and a bass), each
chord swelling in and out on a sin² window that overlaps its neighbours, a soft FM pluck
walking through the chord on the beat, chorus, tempo-synced echoes that differ left and
right, a slow brown-noise swell and a low-pass. Key, mode, tempo, progression and pattern
come from the job's seed and the script's mood, so two clips rarely sound the same.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from shared.errors import BotError, PermanentError, TransientError
from shared.media import audio_duration, ffmpeg_exe, probe

logger = logging.getLogger(__name__)

SAMPLE_RATE = 44_100  # the renderer's AUDIO_RATE, so the final encode does not resample
SYNTH_RATE = 11_025  # the bed is synthesised at this rate (nothing above 4 kHz), then resampled
TARGET_LUFS = -14.0
FILM_AUDIO_BITRATE = 96_000
"""The film's AAC, bits a second."""
SAMPLE_PEAK_LIMIT_DB = -2.5  # sample peaks; true peak stays under -2 in the WAV, -1 in AAC
BED_BELOW_VOICE_LU = 10.0  # the bed, undisturbed, this far under the voice
DUCK_FLOOR = 0.1  # the ducked bed keeps at least this share of its level: -20 dB at most
FADE_IN_S = 1.0
FADE_OUT_S = 1.5
LOOP_CROSSFADE_S = 1.0
MUSIC_SUFFIXES = frozenset({".mp3", ".m4a", ".ogg", ".oga", ".opus", ".wav", ".flac", ".aac"})
FFMPEG_TIMEOUT_S = 300
SILENT_LUFS = -70.0  # what ebur128 reports for silence
MIN_TRACK_S = 3.0  # a shorter track would loop too often to sound like music
# Broadcast-style levelling of the voice brought to TARGET_LUFS: TTS voices peak some 20 dB
# over their loudness, and the limiter alone would take most of that.
VOICE_COMPRESSOR = "threshold=0.1:ratio=3:attack=5:release=100"
# Ducking keyed by the levelled voice, which speaks some 20 dB over the threshold: the gain
# falls near zero and the bed settles near DUCK_FLOOR of its level (about -17 dB measured).
# It recovers within about 0.25 s of silence (the release is 4 time constants of 50 ms).
DUCKING = f"threshold=0.003:ratio=20:attack=20:release=200:mix={1 - DUCK_FLOOR}"

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_PROGRESSIONS = {  # scale degrees, 0-based
    _MAJOR: ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 5, 4), (5, 3, 0, 4)),
    _MINOR: ((0, 5, 2, 6), (0, 3, 5, 4), (0, 6, 5, 6), (0, 5, 3, 6)),
}
# mood -> (modes, tempo range in BPM, arpeggio steps per beat, low-pass Hz)
_MOODS: dict[str, tuple[tuple[tuple[int, ...], ...], tuple[int, int], int, int]] = {
    "calm": ((_MAJOR,), (56, 72), 1, 2200),
    "upbeat": ((_MAJOR,), (84, 104), 2, 4200),
    "dark": ((_MINOR,), (54, 70), 1, 1600),
    "epic": ((_MINOR, _MAJOR), (66, 84), 2, 3200),
}
_PAD_LEVELS = (0.3, 0.22, 0.18, 0.16, 0.1)  # bass, root, third, fifth, ninth
_ARP_PATTERNS = ((0, 1, 2, 1), (0, 2, 1, 3), (0, 1, 2, 3), (2, 1, 0, 1))


class SoundtrackError(BotError):
    """ffmpeg could not make the soundtrack; the message carries the end of its log."""


class SoundtrackInterrupted(SoundtrackError, TransientError):
    """ffmpeg was killed (by the timeout or the kernel): a later attempt may well finish."""


class SoundtrackRejected(SoundtrackError, PermanentError):
    """ffmpeg refused an input: the same inputs would fail the same way."""


@dataclass(frozen=True)
class MusicChoice:
    source: str  # "generated" | "dir" | "off"  (the MUSIC setting)
    seed: str  # picks the key and tempo (generated) or the track (dir)
    music_dir: Path | None = None  # MUSIC_DIR
    mood: str | None = None  # a mood the script provider may suggest: calm, upbeat, dark, epic


@dataclass(frozen=True)
class BedStyle:
    """What the generated bed plays: chosen per job by `bed_style`."""

    root_midi: int
    minor: bool
    bpm: int
    progression: tuple[int, ...]
    arp_pattern: tuple[int, ...]
    arp_steps_per_beat: int
    lowpass_hz: int


def _rng(seed: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))


def bed_style(seed: str, mood: str | None) -> BedStyle:
    """Key, mode, tempo and patterns for the generated bed: the mood narrows the choice, the
    seed makes it."""
    rng = _rng(seed)
    known = _MOODS.get((mood or "").strip().lower())
    modes, (slowest, fastest), steps, lowpass = known or rng.choice(list(_MOODS.values()))
    scale = rng.choice(modes)
    return BedStyle(
        root_midi=rng.randrange(45, 57),  # A2 .. G#3
        minor=scale is _MINOR,
        bpm=rng.randrange(slowest, fastest + 1),
        progression=rng.choice(_PROGRESSIONS[scale]),
        arp_pattern=rng.choice(_ARP_PATTERNS),
        arp_steps_per_beat=steps,
        lowpass_hz=lowpass,
    )


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _chord(style: BedStyle, degree: int) -> list[int]:
    """Root, third, fifth and ninth of `degree`, each folded into the octave above the key's
    root so that chord changes move the voices by small steps."""
    scale = _MINOR if style.minor else _MAJOR
    pitches = [scale[(degree + step) % 7] for step in (0, 2, 4, 8)]
    return [style.root_midi + 12 + pitch for pitch in pitches]


def _pick(index: str, values: Sequence[str], first: int = 0) -> str:
    """An expression worth values[index - first], as a balanced tree of comparisons: the
    expression is evaluated per sample, so log2(len) tests rather than len."""
    if len(values) == 1:
        return values[0]
    half = len(values) // 2
    low, high = _pick(index, values[:half], first), _pick(index, values[half:], first + half)
    return f"if(lt({index},{first + half}),{low},{high})"


def _pad_chains(style: BedStyle, seconds: float, label: str) -> list[str]:
    """The chords as [label]: one `sine` per chord note, each faded in and out by a volume
    envelope evaluated once per 256-sample frame (a sin² window centred on its chord, the
    windows of neighbouring chords summing to one)."""
    chord_s = 8 * 60.0 / style.bpm
    count = len(style.progression)
    chains, labels = [], []
    for slot, degree in enumerate(style.progression):
        notes = _chord(style, degree)
        window = (
            f"st(0,mod(t/{chord_s:.5f}-{slot}+{count / 2},{count})-{count / 2});"
            f"lt(abs(ld(0)),1)*pow(cos(PI*ld(0)/2),2)"
        ).replace(",", "\\,")
        for voice, (midi, level) in enumerate(zip([notes[0] - 12, *notes], _PAD_LEVELS)):
            name = f"pad{slot}_{voice}"
            chains.append(
                f"sine=f={_hz(midi):.3f}:r={SYNTH_RATE}:d={seconds:.4f}:samples_per_frame=256,"
                f"volume=eval=frame:volume='{level}*{window}'[{name}]"
            )
            labels.append(f"[{name}]")
    chains.append(f"{''.join(labels)}amix=inputs={len(labels)}:normalize=0[{label}]")
    return chains


def _arpeggio_expression(style: BedStyle) -> str:
    """aevalsrc expression: a soft FM pluck on every step, walking through the chord."""
    beat = 60.0 / style.bpm
    chord_s = 8 * beat
    chords = [_chord(style, degree) for degree in style.progression]
    step = beat / style.arp_steps_per_beat
    notes = [f"{_hz(chord[note]):.3f}" for chord in chords for note in style.arp_pattern]
    index = f"mod(floor(t/{chord_s:.5f}+0.5),{len(chords)})*4+mod(floor(t/{step:.5f}),4)"
    envelope = f"min(ld(0)/0.008,1)*exp(-5*ld(0)/{step:.5f})"
    return (
        f"st(0,mod(t,{step:.5f}));st(3,{index});st(1,2*PI*{_pick('ld(3)', notes)}*t);"
        f"st(2,{envelope});"
        "0.3*ld(2)*sin(ld(1)+1.2*ld(2)*sin(ld(1)))"
    )


def _generated_bed(style: BedStyle, seconds: float, label: str) -> list[str]:
    """filter_complex chains producing the stereo bed as [label]."""
    beat_ms = 60_000 / style.bpm
    arpeggio = _arpeggio_expression(style).replace(",", "\\,")
    return [
        *_pad_chains(style, seconds, "bed_chords"),
        f"aevalsrc='{arpeggio}':s={SYNTH_RATE}:d={seconds:.4f}[bed_arp]",
        "[bed_chords][bed_arp]amix=inputs=2:normalize=0,"
        f"aresample={SAMPLE_RATE},chorus=0.7:0.9:45|62:0.35|0.3:0.21|0.33:2|1.7,"
        "asplit=2[bed_l][bed_r]",
        f"[bed_l]aecho=0.8:0.85:{beat_ms * 0.75:.0f}|{beat_ms * 2:.0f}:0.32|0.18[bed_el]",
        f"[bed_r]aecho=0.8:0.85:{beat_ms:.0f}|{beat_ms * 1.5:.0f}:0.3|0.2[bed_er]",
        f"anoisesrc=c=brown:a=0.5:r={SAMPLE_RATE}:d={seconds:.4f}:seed={style.root_midi},"
        "lowpass=f=420,tremolo=f=0.1:d=0.7,pan=stereo|c0=c0|c1=0.8*c0[bed_noise]",
        "[bed_el][bed_er]join=inputs=2:channel_layout=stereo[bed_pad]",
        "[bed_pad][bed_noise]amix=inputs=2:weights=1 0.25:normalize=0:duration=first,"
        f"highpass=f=55,lowpass=f={style.lowpass_hz},atrim=end={seconds:.4f}[{label}]",
    ]


def _tracks(music_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in music_dir.rglob("*")
        if path.suffix.lower() in MUSIC_SUFFIXES and path.is_file()
    )


def choose_track(music_dir: Path, seed: str, mood: str | None) -> Path | None:
    """A track from `music_dir`: among those for `mood` (in a folder named after it, or with
    it in the file name) when there are any, else among all; the seed picks which."""
    tracks = _tracks(music_dir)
    mood = (mood or "").strip().lower()
    if mood:
        fitting = [
            path
            for path in tracks
            if mood in path.stem.lower()
            or mood in (part.lower() for part in path.relative_to(music_dir).parts[:-1])
        ]
        tracks = fitting or tracks
    if not tracks:
        return None
    return tracks[_rng(seed).randrange(len(tracks))]


def _track_seconds(track: Path, film_seconds: float) -> float:
    """The track's length: from its header, or decoded when that says it is about as short
    as the film (MP3 headers only estimate it)."""
    seconds = probe(track).duration
    if seconds < film_seconds + 1:
        seconds = audio_duration(track)
    if seconds < MIN_TRACK_S:
        raise ValueError(f"the track lasts {seconds:.2f} s, under {MIN_TRACK_S} s")
    return seconds


def _track_bed(input_index: int, track_seconds: float, seconds: float) -> list[str]:
    """Chains making input `input_index` into [bed_raw]: cut when longer than `seconds`,
    else repeated with an `acrossfade` at each seam."""
    source = (
        f"[{input_index}:a:0]aresample={SAMPLE_RATE},"
        "aformat=sample_fmts=fltp:channel_layouts=stereo"
    )
    cut = f"atrim=end={seconds:.4f},asetpts=N/SR/TB[bed_raw]"
    if track_seconds >= seconds:
        return [f"{source},{cut}"]
    overlap = min(LOOP_CROSSFADE_S, track_seconds / 4)
    copies = math.ceil((seconds - overlap) / (track_seconds - overlap))
    chains = [f"{source},asplit={copies}{''.join(f'[loop{i}]' for i in range(copies))}"]
    joined = "[loop0]"
    for index in range(1, copies):
        chains.append(
            f"{joined}[loop{index}]acrossfade=d={overlap:.4f}:c1=qsin:c2=qsin[looped{index}]"
        )
        joined = f"[looped{index}]"
    return [*chains, f"{joined}{cut}"]


def _faded(seconds: float) -> str:
    fade_in, fade_out = min(FADE_IN_S, seconds / 3), min(FADE_OUT_S, seconds / 3)
    return (
        f"afade=t=in:d={fade_in:.3f}:curve=qsin,"
        f"afade=t=out:st={seconds - fade_out:.4f}:d={fade_out:.3f}:curve=qsin"
    )


def _track_for(music: MusicChoice, seconds: float) -> tuple[Path, float] | None:
    """The MUSIC_DIR track to play and its length, or None (logged) to use the generated bed."""
    track = choose_track(music.music_dir, music.seed, music.mood) if music.music_dir else None
    if track is None:
        logger.warning(
            "no music track found, using the generated bed music_dir=%s", music.music_dir
        )
        return None
    try:
        return track, _track_seconds(track, seconds)
    except (OSError, ValueError) as error:
        logger.warning(
            "music track unusable, using the generated bed track=%s error=%s",
            track,
            _one_line(str(error)),
        )
        return None


def _bed_chains(
    music: MusicChoice, seconds: float, track: tuple[Path, float] | None, input_index: int
) -> list[str]:
    """Chains producing [bed]: the track or the generated bed, faded and measured."""
    if track is None:
        raw = _generated_bed(bed_style(music.seed, music.mood), seconds, "bed_raw")
    else:
        raw = _track_bed(input_index, track[1], seconds)
    return [*raw, f"[bed_raw]{_faded(seconds)},{_measure('bed')}[bed]"]


def _one_line(message: str) -> str:
    return " ".join(message.split())[-300:]


def _run(args: list[str]) -> str:
    """Run ffmpeg; return its log (info level, where ebur128 writes its summary)."""
    try:
        completed = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info", *args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=FFMPEG_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SoundtrackInterrupted(f"ffmpeg took over {FFMPEG_TIMEOUT_S} s") from None
    if completed.returncode < 0:
        raise SoundtrackInterrupted(
            f"ffmpeg was killed by signal {-completed.returncode}: {completed.stderr[-1500:]}"
        )
    if completed.returncode != 0:
        raise SoundtrackRejected(
            f"ffmpeg exited {completed.returncode}: {completed.stderr[-1500:]}"
        )
    return completed.stderr


def _measure(name: str) -> str:
    """An ebur128 filter named `name`, whose integrated loudness `_loudness` reads."""
    return f"ebur128@{name}=framelog=quiet"


def _loudness(log: str, name: str) -> float:
    match = re.search(
        rf"ebur128\S*@{name} @ [^]]+\] Summary:\s+Integrated loudness:\s+"
        r"I:\s+(-?[\d.]+|-inf) LUFS",
        log,
    )
    if match is None:
        raise SoundtrackRejected(f"ffmpeg did not report the loudness of {name}: {log[-500:]}")
    return max(float(match.group(1)), SILENT_LUFS)


def _gain_to(target: float, measured: float) -> float:
    """dB bringing `measured` to `target`; none for silence, which no gain can fix."""
    return 0.0 if measured <= SILENT_LUFS else target - measured


@dataclass(frozen=True)
class _Prepared:
    seconds: float
    voice: Path
    voice_lufs: float
    bed: Path | None
    bed_lufs: float


def _prepare(
    voices: Sequence[Path],
    durations: Sequence[float],
    gap: float,
    music: MusicChoice | None,
    work_dir: Path,
) -> _Prepared:
    """First pass: the voice track (mono) and the bed (stereo, faded), measured, as float WAVs."""
    if len(voices) != len(durations) or not voices:
        raise ValueError(f"need one duration per voice: {len(voices)} voices, {len(durations)}")
    seconds = sum(durations) + gap * len(durations)
    inputs: list[str] = []
    chains: list[str] = []
    for index, (voice, duration) in enumerate(zip(voices, durations)):
        inputs += ["-i", str(voice)]
        chains.append(
            f"[{index}:a:0]aresample={SAMPLE_RATE},aformat=sample_fmts=fltp:channel_layouts=mono,"
            f"apad=whole_dur={duration + gap:.4f},atrim=end={duration + gap:.4f},"
            f"asetpts=N/SR/TB[voice{index}]"
        )
    labels = "".join(f"[voice{index}]" for index in range(len(voices)))
    chains.append(f"{labels}concat=n={len(voices)}:v=0:a=1,{_measure('voice')}[voice]")
    voice_path = work_dir / "soundtrack_voice.wav"
    outputs = ["-map", "[voice]", "-c:a", "pcm_f32le", "-y", str(voice_path)]
    if music is None or music.source == "off":
        log = _run([*inputs, "-filter_complex", ";".join(chains), *outputs])
        return _Prepared(seconds, voice_path, _loudness(log, "voice"), None, SILENT_LUFS)
    bed_path = work_dir / "soundtrack_bed.wav"
    outputs += ["-map", "[bed]", "-c:a", "pcm_f32le", "-y", str(bed_path)]
    log = _run_with_bed(inputs, chains, outputs, music, seconds)
    return _Prepared(seconds, voice_path, _loudness(log, "voice"), bed_path, _loudness(log, "bed"))


def _run_with_bed(
    inputs: list[str], chains: list[str], outputs: list[str], music: MusicChoice, seconds: float
) -> str:
    """Run ffmpeg on `chains` plus those making [bed] from the chosen track, or, when there
    is none or ffmpeg cannot read it, from the generated bed."""
    track = _track_for(music, seconds) if music.source == "dir" else None
    if track is not None:
        bed = _bed_chains(music, seconds, track, inputs.count("-i"))
        graph = ";".join([*chains, *bed])
        try:
            return _run([*inputs, "-i", str(track[0]), "-filter_complex", graph, *outputs])
        except SoundtrackRejected as error:
            logger.warning(
                "pass with the music track failed, retrying with the generated bed "
                "track=%s error=%s",
                track[0],
                _one_line(str(error)),
            )
    graph = ";".join([*chains, *_bed_chains(music, seconds, None, 0)])
    return _run([*inputs, "-filter_complex", graph, *outputs])


def _mix(prepared: _Prepared, out_path: Path, stems: tuple[Path, Path] | None) -> float:
    """Second pass: the voice at the target and evened out by a compressor; the bed
    BED_BELOW_VOICE_LU under it, centred, ducking while the voice speaks; their sum as float
    WAV at `out_path`, and its loudness. With `stems`, the ducked bed alone and the same bed
    undisturbed are written there too."""
    voice_gain = _gain_to(TARGET_LUFS, prepared.voice_lufs)
    # The voice in both channels at -3 dB each keeps its loudness.
    voice = (
        f"[0:a]volume={voice_gain:.3f}dB,acompressor={VOICE_COMPRESSOR},"
        "pan=stereo|c0=0.7071*c0|c1=0.7071*c0"
    )
    outputs: list[str] = []
    if prepared.bed is None:
        chains = [f"{voice},{_measure('mix')}[mix]"]
    else:
        bed_gain = _gain_to(TARGET_LUFS - BED_BELOW_VOICE_LU, prepared.bed_lufs)
        chains = [
            f"{voice},asplit=2[key][voice]",
            f"[1:a]volume={bed_gain:.3f}dB" + (",asplit=2[bed][dry]" if stems else "[bed]"),
            f"[bed][key]sidechaincompress={DUCKING}"
            + (",asplit=2[ducked][stem]" if stems else "[ducked]"),
            f"[voice][ducked]amix=inputs=2:normalize=0:duration=first,{_measure('mix')}[mix]",
        ]
        for label, path in zip(("[stem]", "[dry]"), stems or ()):
            outputs += ["-map", label, "-c:a", "pcm_f32le", "-y", str(path)]
    beds = ["-i", str(prepared.bed)] if prepared.bed is not None else []
    mix = ["-map", "[mix]", "-c:a", "pcm_f32le", "-y", str(out_path)]
    graph = ";".join(chains)
    log = _run(["-i", str(prepared.voice), *beds, "-filter_complex", graph, *mix, *outputs])
    return _loudness(log, "mix")


def _finish(source: Path, lufs: float, out_path: Path) -> None:
    """Last pass: one gain to TARGET_LUFS, then a look-ahead limiter (delay compensated)
    for the few peaks above SAMPLE_PEAK_LIMIT_DB; 16-bit WAV, or the film's AAC when
    `out_path` ends in .m4a."""
    gain = _gain_to(TARGET_LUFS, lufs)
    limit = 10 ** (SAMPLE_PEAK_LIMIT_DB / 20)
    if out_path.suffix == ".m4a":
        codec = ["-c:a", "aac", "-aac_coder", "fast", "-b:a", str(FILM_AUDIO_BITRATE)]
    else:
        codec = ["-c:a", "pcm_s16le"]
    _run(
        [
            "-i",
            str(source),
            "-af",
            f"volume={gain:.3f}dB,alimiter=limit={limit:.4f}:attack=5:release=60:level=0:latency=1",
            *codec,
            "-y",
            str(out_path),
        ]
    )


def _soundtrack(
    voices: Sequence[Path],
    durations: Sequence[float],
    gap: float,
    out_path: Path,
    music: MusicChoice | None,
    work_dir: Path,
    stems: tuple[Path, Path] | None = None,
) -> Path:
    """The three passes; `stems` (ducked, dry) are written by the mix pass when given."""
    started = time.monotonic()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    prepared = _prepare(voices, durations, gap, music, work_dir)
    mixed = work_dir / "soundtrack_mix.wav"
    lufs = _mix(prepared, mixed, stems)
    _finish(mixed, lufs, Path(out_path))
    logger.info(
        "soundtrack mixed music=%s seconds=%.2f voice_lufs=%.1f bed_lufs=%.1f mix_lufs=%.1f "
        "wall_s=%.2f path=%s",
        music.source if music is not None else "off",
        prepared.seconds,
        prepared.voice_lufs,
        prepared.bed_lufs,
        lufs,
        time.monotonic() - started,
        out_path,
    )
    return Path(out_path)


def mix_soundtrack(
    voices: Sequence[Path],
    durations: Sequence[float],
    gap: float,
    out_path: Path,
    *,
    music: MusicChoice | None,
    work_dir: Path,
) -> Path:
    """The film's finished soundtrack at out_path, a WAV, or the film's AAC when out_path ends
    in .m4a: each voice padded with silence to its duration + gap, concatenated; the music bed
    under it; normalised.

    44.1 kHz 16-bit stereo, the voice centred. `work_dir` receives the intermediate WAVs.
    """
    return _soundtrack(voices, durations, gap, out_path, music, work_dir)


def music_stem(
    voices: Sequence[Path],
    durations: Sequence[float],
    gap: float,
    out_path: Path,
    *,
    music: MusicChoice,
    work_dir: Path,
    dry_path: Path,
) -> Path:
    """The ducked bed alone (float WAV at out_path), made by the same passes and filter graph
    as the mix, and at `dry_path` the same bed at the same level, not ducked: their ratio is
    the ducking, apart from the music's own swells."""
    mix_path = Path(work_dir) / "soundtrack_for_stem.wav"
    _soundtrack(voices, durations, gap, mix_path, music, work_dir, (Path(out_path), dry_path))
    return Path(out_path)


def music_bed(music: MusicChoice, seconds: float, out_path: Path) -> Path:
    """The bed alone as it goes into the mix, at its own level and before ducking: the
    track looped or cut, or the generated bed; faded in and out. Float WAV, stereo."""
    _run_with_bed(
        [], [], ["-map", "[bed]", "-c:a", "pcm_f32le", "-y", str(out_path)], music, seconds
    )
    return Path(out_path)
