# NixOS VM test: a machine with two jobs; files written into the sources become versions in
# the vault; a stop/start of the service catches up with what changed while it was down;
# the porcelain (`history`, `versions`, `status --json`, `verify`, `restore`) reads the vault;
# retirement keeps a job's count limit; a reload keeps the service running.
{ pkgs, module }:
pkgs.testers.runNixOSTest {
  name = "reverberator";

  nodes.machine =
    { ... }:
    {
      imports = [ module ];
      systemd.tmpfiles.rules = [
        "d /srv/docs 0755 root root -"
        "d /srv/notes 0755 root root -"
      ];
      services.reverberator = {
        enable = true;
        initVaults = true; # the vault is on the root filesystem here
        defaults = {
          vault = "/var/lib/vault";
          min_snapshot_time = "1s";
          max_snapshot_delay = "5s";
        };
        jobs.docs = {
          source = "/srv/docs";
          exclude = [ "*.swp" ];
        };
        jobs."my notes" = {
          source = "/srv/notes";
          keep_versions = 3;
        };
        retireTimer.enable = true;
      };
    };

  testScript = ''
    import json
    import re

    def versions(job):
        out = machine.succeed(f"ls /var/lib/vault/{job} | grep -E '^V[0-9]+-' || true")
        return out.split()

    def wait_for_content(job, path, text):
        machine.wait_until_succeeds(
            f"grep -qx '{text}' /var/lib/vault/{job}/current/{path}", timeout=60
        )

    machine.wait_for_unit("reverberator.service")
    # Type=notify: the unit is active only once the supervisor said READY=1, and its
    # STATUS= summary is the unit's status text.
    machine.wait_until_succeeds(
        "systemctl show -p StatusText --value reverberator.service | grep -q '2 jobs: '", timeout=60
    )
    assert "notify" in machine.succeed("systemctl show -p Type --value reverberator.service")
    assert machine.succeed("systemctl show -p WatchdogUSec --value reverberator.service").strip() not in ("", "0", "infinity")
    machine.succeed("test -f /etc/reverberator/config.toml")
    machine.succeed("reverberator check-config >&2")

    machine.succeed("echo one > /srv/docs/a.txt")
    machine.succeed("echo first > /srv/notes/n.txt")
    machine.succeed("echo junk > /srv/docs/x.swp")
    wait_for_content("docs", "a.txt", "one")
    wait_for_content("my_notes", "n.txt", "first")
    machine.fail("test -e /var/lib/vault/docs/current/x.swp")

    machine.succeed("echo two > /srv/docs/a.txt")
    wait_for_content("docs", "a.txt", "two")

    # Changes made while the service is down are caught up by the rescan at start.
    machine.systemctl("stop reverberator.service")
    before = len(versions("docs"))
    machine.succeed("echo three > /srv/docs/a.txt")
    machine.systemctl("start reverberator.service")
    machine.wait_for_unit("reverberator.service")
    wait_for_content("docs", "a.txt", "three")
    assert len(versions("docs")) > before, "no catch-up version"

    # Older versions keep what they held, readable without the tool (-s: the first version
    # has no a.txt).
    machine.succeed("grep -qsx one /var/lib/vault/docs/V*/a.txt")

    # `history JOB PATH`: one line per version in which the path changed,
    # `  N  <created>  added|modified|deleted  <size>`.
    history = machine.succeed("reverberator history docs a.txt")
    print(history)
    row = re.compile(r"^\s*(\d+)\s+(\S+)\s+(added|modified|deleted)\s+\S")
    changes: list[str] = []
    for line in history.splitlines():
        if line.strip():
            m = row.match(line)
            assert m, f"unexpected history line: {line!r}"
            changes.append(m.group(3))
    assert changes and changes[0] == "added" and changes.count("modified") >= 2, history

    # `versions JOB`: one line per version.
    listed = [v for v in machine.succeed("reverberator versions docs").splitlines() if v.strip()]
    assert len(listed) == len(versions("docs")), (listed, versions("docs"))

    # The porcelain's --json is JSON lines; verify finds no problem (exit 0).
    for line in machine.succeed("reverberator status --json").splitlines():
        json.loads(line)
    machine.succeed("reverberator verify >&2")

    # Restore the latest version out of the vault.
    machine.succeed("reverberator restore docs --to /tmp/restored")
    machine.succeed("grep -qx three /tmp/restored/a.txt")

    # Man pages come with the package.
    machine.succeed("man -w reverberator-history >&2")

    # Retirement keeps at most 3 versions of "my notes".
    for i in range(5):
        machine.succeed(f"echo {i} > /srv/notes/n.txt")
        wait_for_content("my_notes", "n.txt", str(i))
    machine.succeed("systemctl start reverberator-retire.service")
    assert len(versions("my_notes")) <= 3, versions("my_notes")

    machine.systemctl("reload reverberator.service")
    machine.wait_for_unit("reverberator.service")
  '';
}
