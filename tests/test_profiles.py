import pytest
from click.testing import CliRunner

from genre_edge.cli import main
from genre_edge.errors import ConfigError
from genre_edge.profile import all_profiles, builtin_names, detect, fits, load_profile, machine_info

X86_512 = "processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu sse avx avx2 fma avx512f avx512_vnni\n"
X86_AVX2 = "processor\t: 0\nmodel name\t: Intel Core i5-6500\nflags\t\t: fpu sse avx avx2 fma\n"
RPI4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
RPI5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"


@pytest.mark.parametrize("cpuinfo, dt, tegra, arch, expected", [
    (X86_512, "", "", "x86_64", "x86-avx512-vnni"),
    (X86_AVX2, "", "", "x86_64", "x86-avx2"),
    (RPI4, "Raspberry Pi 4 Model B Rev 1.4", "", "aarch64", "rpi4"),
    (RPI5, "Raspberry Pi 5 Model B Rev 1.0", "", "aarch64", "rpi5"),
    (RPI5, "NVIDIA Jetson Orin Nano Developer Kit", "# R36 (release), REVISION: 3.0", "aarch64", "jetson-orin-nano"),
    (RPI4, "NVIDIA Jetson Xavier NX Developer Kit", "# R32 (release), REVISION: 7.1", "aarch64", "jetson-xavier-nx"),
])
def test_detect_from_recorded_device_text(cpuinfo, dt, tegra, arch, expected):
    info = machine_info(cpuinfo=cpuinfo, device_tree=dt, tegra=tegra, arch=arch)
    assert detect(info).name == expected


def test_builtin_profiles_validate_and_ship():
    names = builtin_names()
    assert {"rpi4", "rpi5", "jetson-orin-nano", "jetson-xavier-nx", "x86-avx2", "x86-avx512-vnni"} <= set(names)
    for p in all_profiles():
        assert p.providers[-1].name == "CPUExecutionProvider"
    jet = load_profile("jetson-orin-nano")
    assert [p.name for p in jet.providers] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert jet.providers[0].options["trt_fp16_enable"] is True


def test_fits_explains():
    ok, why = fits(load_profile("rpi4"), machine_info(cpuinfo=X86_512, device_tree="", tegra="", arch="x86_64"))
    assert not ok and "aarch64" in why
    ok, why = fits(load_profile("x86-avx512-vnni"), machine_info(cpuinfo=X86_AVX2, device_tree="", tegra="", arch="x86_64"))
    assert not ok and "avx512f" in why


@pytest.mark.parametrize("text, msg", [
    ('name="x"\nvariant="int4"\n', "variant: 'int4' is not valid; choose one of"),
    ('name="x"\n[threads]\nintra_op=-1\n', "threads.intra_op: -1 is below the minimum 0"),
    ('name="x"\n[[providers]]\nname="CUDAExecutionProvider"\n', "last provider must be CPUExecutionProvider"),
    ('name="x"\n[[providers]]\nname="MagicEP"\n', "providers[0].name" ),
    ('name="x"\nspeed="fast"\n', "speed: unknown key"),
    ('variant="fp32"\n', "name: required key is missing"),
])
def test_bad_user_profile(tmp_path, text, msg):
    p = tmp_path / "mine.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_profile(p)
    assert msg in str(ei.value) and str(p) in str(ei.value)
    res = CliRunner().invoke(main, ["profile", "validate", str(p)])
    assert res.exit_code == 1 and "Error" in res.output


def test_profile_cli():
    r = CliRunner().invoke(main, ["profile", "list", "--json"])
    assert r.exit_code == 0 and "rpi5" in r.output
    r = CliRunner().invoke(main, ["profile", "detect"])
    assert r.exit_code == 0 and r.output.strip()
    r = CliRunner().invoke(main, ["profile", "show", "rpi4"])
    assert 'variant = "int8-arm64"' in r.output
    r = CliRunner().invoke(main, ["profile", "show", "toaster"])
    assert r.exit_code == 1 and "unknown profile 'toaster'" in r.output


@pytest.mark.parametrize("features, arch, expected", [
    ({"AVX2": True, "FMA3": True, "AVX512F": True, "AVX512VNNI": True}, "x86_64", "x86-avx512-vnni"),  # Windows/Linux VNNI
    ({"AVX2": True, "FMA3": True, "AVX512F": False}, "x86_64", "x86-avx2"),  # an Intel Mac or Windows laptop
    ({"ASIMD": True, "ASIMDDP": True, "ASIMDHP": True, "FPHP": True}, "aarch64", "rpi5"),  # Apple silicon
])
def test_auto_profile_without_proc_cpuinfo(features, arch, expected):
    """macOS and Windows have no /proc/cpuinfo: numpy's own CPU detection gives the flags."""
    info = machine_info(cpuinfo="", device_tree="", tegra="", arch=arch, numpy_features=features)
    assert detect(info).name == expected
    assert machine_info(cpuinfo=X86_AVX2, device_tree="", tegra="", arch="x86_64",
                        numpy_features={"AVX512VNNI": True}).cpu_flags == {"fpu", "sse", "avx", "avx2", "fma"}


def test_cpuinfo_flags_the_process_cannot_run_are_dropped():
    """Under QEMU user mode (or a hypervisor that lists more than it enables) /proc/cpuinfo shows AVX-512/VNNI
    while the code runs on an AVX2-only core: CPUID (numpy's view, and ONNX Runtime's dispatch) wins."""
    haswell = {"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512VNNI": False}
    info = machine_info(cpuinfo=X86_512, device_tree="", tegra="", arch="x86_64", numpy_features=haswell)
    assert "avx512_vnni" not in info.cpu_flags and "avx512f" not in info.cpu_flags and "avx2" in info.cpu_flags
    assert detect(info).name == "x86-avx2"
    from genre_edge.catalog_index import saturates_u8s8

    assert saturates_u8s8(info.cpu_flags, info.arch)
    full = machine_info(cpuinfo=X86_512, device_tree="", tegra="", arch="x86_64",
                        numpy_features={"AVX2": True, "AVX512F": True, "AVX512VNNI": True})
    assert detect(full).name == "x86-avx512-vnni"
    # a recorded cpuinfo without numpy features is taken as written (tests describe other machines)
    assert "avx512_vnni" in machine_info(cpuinfo=X86_512, device_tree="", tegra="", arch="x86_64").cpu_flags
    # a host with AVX-VNNI and AMX as well (Zen 5, Sapphire Rapids): numpy cannot confirm those, so once the
    # listed flags are shown not to be this CPU's they go too - kept, the emulated Haswell's int8 index
    # skipped its 7-bit queries and saturated
    newer = X86_512.replace("avx512_vnni", "avx512_vnni avx_vnni amx_tile amx_int8")
    info = machine_info(cpuinfo=newer, device_tree="", tegra="", arch="x86_64", numpy_features=haswell)
    assert not {"avx_vnni", "amx_int8", "amx_tile", "avx512_vnni"} & info.cpu_flags
    assert detect(info).name == "x86-avx2" and saturates_u8s8(info.cpu_flags, info.arch)
    # where the listed flags agree with numpy's view (Alder Lake: AVX-VNNI without AVX-512) they stay
    alder = X86_AVX2.replace("fma", "fma avx_vnni")
    info = machine_info(cpuinfo=alder, device_tree="", tegra="", arch="x86_64",
                        numpy_features={"AVX2": True, "FMA3": True, "AVX512F": False, "AVX512VNNI": False})
    assert "avx_vnni" in info.cpu_flags and not saturates_u8s8(info.cpu_flags, info.arch)


def test_gpu_profiles_place_small_models_on_the_cpu_and_fall_back_quietly(monkeypatch, caplog):
    """Issue 17: per-model placement (user model and head on the CPU), one warning per missing provider
    instead of onnxruntime's ERROR block per session, TensorRT dropped when its libraries are absent."""
    import logging

    import genre_edge.session as session
    from genre_edge.ortload import onnxruntime

    prof = load_profile("x86-cuda")
    assert prof.cpu_models == ("user", "head") and prof.variant == "fp16"
    assert session.providers_for(prof, "user") == ["CPUExecutionProvider"]
    ort = onnxruntime()
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(session, "_loadable", lambda name: name != "TensorrtExecutionProvider")
    monkeypatch.setattr(session, "_warned", set())
    jet = load_profile("jetson-orin-nano")
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        got = session.providers_for(jet, "encoder")
        assert [p if isinstance(p, str) else p[0] for p in got] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert caplog.text.count("TensorrtExecutionProvider") == 1 and "libnvinfer" in caplog.text
    assert session.providers_for(jet, "head") == ["CPUExecutionProvider"]


def test_gpu_host_profile_is_chosen_by_name_only_and_needs_onnxruntime_gpu():
    import dataclasses

    cuda = load_profile("x86-cuda")
    info = machine_info(cpuinfo=X86_512, device_tree="", tegra="", arch="x86_64")
    assert detect(info).name == "x86-avx512-vnni"  # never auto-detected
    ok, why = fits(cuda, dataclasses.replace(info, providers=("CPUExecutionProvider",)))
    assert not ok and "onnxruntime-gpu" in why
    assert fits(cuda, dataclasses.replace(info, providers=("CUDAExecutionProvider", "CPUExecutionProvider")))[0]
    assert fits(load_profile("x86-avx512-vnni"), dataclasses.replace(info, providers=("CPUExecutionProvider",)))[0]
