"""``kesp-agent`` without a running agent: bad input is one line, a named file, an exit code."""

from __future__ import annotations

from pathlib import Path

from agent.runtime.config import AgentConfig, save_config
from tests.cli_helpers import one_line_refusal, run_module, tree


def _config(tmp_path: Path, **extra: object) -> Path:
    cfg = AgentConfig(device_id="kiosk-1", station_id="s-1", district="osh",
                      state_dir=str(tmp_path / "state"), key_dir=str(tmp_path / "keys"),
                      control_socket=str(tmp_path / "run" / "agent.sock"))
    path = tmp_path / "agent.json"
    save_config(cfg, path)
    if extra:
        import json

        data = json.loads(path.read_text())
        data.update(extra)
        path.write_text(json.dumps(data))
    return path


def test_mistyped_arguments_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    before = tree(tmp_path)
    for args, words in (
        (("manual", "abc"), ("'abc'", "kesp-agent manual 17")),
        (("manual", "0"), ("kesp-agent manual 17",)),
        (("reprint", "x"), ("'x'", "s-0001-kiosk-a-00007")),
        (("document", "12"), ("'12'", "4-20")),
    ):
        r = run_module("agent.runtime.cli", "--config", cfg, *args)
        line = one_line_refusal(r, *words, code=2)
        ky, _, ru = line.partition(" / ")
        assert any(ch in ky for ch in "ңөүҮӨҢ") or "тизме" in ky or "документ" in ky, line
        assert ru, line
    assert tree(tmp_path) == before


def test_agent_not_running_and_bad_config_name_the_fix(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    one_line_refusal(run_module("agent.runtime.cli", "--config", cfg, "status"),
                     "systemctl status kesp-agent", code=69)
    r = run_module("agent.runtime.cli", "--config", tmp_path / "nope.json", "open")
    one_line_refusal(r, "nope.json", "kesp-provision device init", code=78)
    bad_zone = _config(tmp_path, timezone="Asia/Bishkekk")
    one_line_refusal(run_module("agent.runtime.cli", "--config", bad_zone, "status"),
                     "agent.json", "Asia/Bishkekk", "Asia/Bishkek", code=78)


def test_audit_show_works_from_the_kiosk_config(tmp_path: Path) -> None:
    """Formerly: 'unrecognized arguments: --key-dir' whenever the config was readable."""
    cfg = _config(tmp_path)
    r = run_module("agent.runtime.cli", "--config", cfg, "audit", "show")
    assert "unrecognized arguments" not in r.err
    one_line_refusal(r, "no audit log at", str(tmp_path / "state"), "--config", code=2)


def test_status_says_what_to_do_for_a_missing_device_in_both_languages() -> None:
    from agent.runtime.operator_text import status_lines

    detail = "sensor at /dev/kesp-sensor not found: check the cable"
    lines = status_lines({"station": "s-1", "device": "kiosk-1", "phase": "open",
                          "devices": {"sensor": {"state": "disconnected", "detail": detail},
                                      "printer": {"state": "cover-open", "detail": ""},
                                      "document_reader": {"state": "fault", "detail": ""}}})
    ky = "\n".join(k for k, _ in lines)
    ru = "\n".join(r for _, r in lines)
    assert "Проверьте кабель" in ru and "Кабелин текшериңиз" in ky
    assert detail in ru  # the technician's detail kept, in brackets
    assert "Закройте крышку принтера" in ru and "капкагын жабыңыз" in ky
    assert "Вызовите техника" in ru  # a failing reader is the technician's


def test_a_full_disk_is_said_in_both_languages_with_what_to_do() -> None:
    from agent.runtime.operator_text import command_answer, one_line, refusal, unreachable

    answer = command_answer("status", {"station": "s-1", "device": "kiosk-1", "phase": "open",
                                       "storage": "full", "pending_slips": ["s-1-k-00004"],
                                       "devices": {"printer": {"state": "ready"}}})
    text = answer.text()
    assert "Диск: заполнен." in text and "Диск: толуп калды." in text
    assert "Вызовите техника, чтобы освободить место" in text
    assert "орун бошотуу үчүн техникке кайрылыңыз" in text.lower()
    # the slip waits for room, not for the printer (which is fine)
    assert "s-1-k-00004; напечатаются сами, когда освободится место" in text
    assert "Проверьте принтер" not in text
    assert answer.code == 3
    ky, ru = refusal("disk-full", {"command": "close"}, "the state disk is full")
    assert "диски толуп калды" in ky and "диск киоска заполнен" in ru
    assert "повторите команду" in ru
    line = one_line(unreachable("no agent listening", 3.2))
    assert "свободно 3.2 МБ" in line and "бош 3.2 МБ" in line
    assert "диск" not in one_line(unreachable("no agent listening")).lower()


def test_status_names_a_peer_on_another_protocol_version_and_which_kiosk_to_update() -> None:
    from agent.runtime.operator_text import status_lines

    peers = [{"kiosk": "kiosk-2", "state": "unreachable", "protocol": 1},
             {"kiosk": "kiosk-3", "state": "unreachable", "protocol": 3},
             {"kiosk": "kiosk-4", "state": "connected", "protocol": 2}]
    result = {"station": "s-1", "device": "kiosk-1", "phase": "open", "peers": peers}
    lines = status_lines({**result, "peer_protocol": 2})
    ky = "\n".join(k for k, _ in lines)
    ru = "\n".join(r for _, r in lines)
    assert ("Киоск kiosk-2 работает на более старой версии протокола обмена между киосками "
            "(v1, у этого киоска v2): обновите киоск kiosk-2") in ru
    assert "(v3, у этого киоска v2): обновите этот киоск" in ru
    assert "(v1, бул киоскто v2): kiosk-2 киоскун жаңыртыңыз" in ky
    assert "(v3, бул киоскто v2): бул киоскту жаңыртыңыз" in ky
    assert "kiosk-4" not in ru.split("Что сделать:")[1]
    # Their network is fine: no cable advice for kiosks refused for their version.
    assert "сетевой кабель" not in ru and "тармак кабелин" not in ky
    # An agent that does not report its peer protocol: shown as before.
    older = "\n".join(r for _, r in status_lines(result))
    assert "версии протокола" not in older and "сетевой кабель" in older
