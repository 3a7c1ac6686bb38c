namespace ProxyPlanes.VmLane;

/// <summary>How the VM lane boots and runs a command. The defaults suit the kernel tests.</summary>
public sealed record VmLaneOptions
{
    public static VmLaneOptions Default { get; } = new();

    /// <summary>The kernel to boot; null: the newest stock kernel in /boot (<see cref="VmKernel.FindNewest"/>).</summary>
    public VmKernel? Kernel { get; init; }

    /// <summary>Guest memory. Anything the command writes outside /mnt/lane lives in RAM too (the root's writable layer is a tmpfs).</summary>
    public int MemoryMiB { get; init; } = 3072;

    /// <summary>Virtual CPUs (multi-threaded TCG: each one is a host thread).</summary>
    public int Cpus { get; init; } = 2;

    /// <summary>The emulator: a name looked up on PATH, or a path.</summary>
    public string Qemu { get; init; } = "qemu-system-x86_64";

    /// <summary>Where built initramfs archives are kept; null: <see cref="Initramfs.DefaultCacheDirectory"/>.</summary>
    public string? CacheDirectory { get; init; }

    /// <summary>
    /// A host folder shared writable with the guest at <see cref="VmLane.GuestLaneDirectory"/>; it
    /// keeps stdout, stderr, exit-code, console.log and whatever the command wrote there. Null: a
    /// temporary folder, deleted after the run.
    /// </summary>
    public string? LaneDirectory { get; init; }

    /// <summary>The command's working directory in the guest.</summary>
    public string WorkingDirectory { get; init; } = "/";

    /// <summary>Environment variables set for the command (on top of the lane's: PATH, HOME=/root, PROXYPLANES_VM=1, DOTNET_NOLOGO...).</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// How many times longer than on the host the guest's waits may take, exported to the command as
    /// <c>PROXYPLANES_TIME_SCALE</c> (the lab's <c>TimeBudget</c> reads it) unless
    /// <see cref="Environment"/> sets it. Under TCG a .NET process starts 30-50x slower than on the
    /// host (measured: `proxyplanes run` takes 18-30 s to its first log line, 32-42 s to its first
    /// IPVS sync, against 0.4 s and ~1 s on the host), so budgets sized for the host fail here.
    /// </summary>
    public double TimeScale { get; init; } = 4;

    /// <summary>Extra kernel command-line words.</summary>
    public string ExtraKernelArguments { get; init; } = "";
}
