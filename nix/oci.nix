# An OCI image of reverberator built with dockerTools (no registry, no base image).
# Mount the config at /etc/reverberator/config.toml (read-only), the sources under /source and
# the vaults under /vault, and write the config with those in-container paths.
{
  dockerTools,
  reverberator,
}:
dockerTools.buildLayeredImage {
  name = "reverberator";
  tag = reverberator.version;
  # fakeNss: a minimal /etc/passwd and /etc/group (root, nobody) for owner names, as
  # packaging/container/rootfs gives the Containerfile image.
  contents = [
    reverberator
    dockerTools.fakeNss
  ];
  # Mount points and a /tmp; nothing else: the binaries need no shell and no libraries
  # beyond their own closure.
  extraCommands = ''
    mkdir -p etc/reverberator source vault tmp
    chmod 1777 tmp
  '';
  config = {
    Cmd = [
      "reverberator"
      "run"
      "--config"
      "/etc/reverberator/config.toml"
    ];
    Env = [ "PATH=/bin" ];
    Volumes = {
      "/source" = { };
      "/vault" = { };
    };
    Labels = {
      "org.opencontainers.image.title" = "reverberator";
      "org.opencontainers.image.description" = "Continuous, versioned backup of folders";
    };
  };
}
