from __future__ import annotations

from serving import hardware
from serving.hardware import cpu_dtype, cpu_flags, has_native_bf16

AVX2_EPYC = {"fpu", "sse4_2", "avx", "avx2", "fma"}
SAPPHIRE_RAPIDS = AVX2_EPYC | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def test_auto_is_bfloat16_only_where_the_cpu_computes_it_natively():
    assert cpu_dtype("auto", AVX2_EPYC) == "float32"
    assert cpu_dtype("auto", AVX2_EPYC | {"avx512f", "avx512bw"}) == "float32"  # AVX-512 without BF16 emulates it
    assert cpu_dtype("auto", SAPPHIRE_RAPIDS) == "bfloat16"
    assert cpu_dtype("auto", AVX2_EPYC | {"avx512_bf16"}) == "bfloat16"  # Zen 4


def test_an_explicit_dtype_is_kept():
    assert cpu_dtype("bfloat16", AVX2_EPYC) == "bfloat16"
    assert cpu_dtype("float32", SAPPHIRE_RAPIDS) == "float32"


def test_flags_come_from_the_first_processor(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    monkeypatch.setattr(hardware, "CPUINFO", cpuinfo)
    cpu_flags.cache_clear()
    try:
        assert cpu_flags() == {"fpu", "avx2", "amx_bf16"}
        assert has_native_bf16()
        monkeypatch.setattr(hardware, "CPUINFO", tmp_path / "missing")
        cpu_flags.cache_clear()
        assert cpu_flags() == frozenset() and not has_native_bf16()
    finally:
        cpu_flags.cache_clear()
