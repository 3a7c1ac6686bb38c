using ProxyPlanes.Sandboxed;
using static ProxyPlanes.Kernel.Tests.ProxyCli;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The daemon as it ships: scripts/test.sh publishes src/ProxyPlanes (native AOT, PublishAot in its project) and
/// names the folder in <c>PROXYPLANES_DAEMON_DIR</c>, so every test that starts the daemon as a process (the
/// conformance suite, the daemon, config, explain and end-to-end tests, the demo) runs that binary. This checks
/// the wiring itself: were it lost, those tests would quietly run the JIT build next to them instead.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class PublishedDaemonTests
{
    [PublishedDaemonFact]
    public async Task PublishedDaemon_IsOneNativeExecutable_AndIsWhatTheTestsStart()
    {
        var folder = Environment.GetEnvironmentVariable(ProxyProcess.DaemonDirectoryVariable)!;

        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Daemon);

        Assert.Equal(Path.Combine(folder, ProxyProcess.Daemon), file);
        Assert.Empty(prefix);
        var magic = new byte[4];
        await using (var stream = File.OpenRead(file)) await stream.ReadExactlyAsync(magic);
        Assert.Equal("\u007fELF"u8.ToArray(), magic);
        // An apphost needs its proxyplanes.dll beside it and a .NET runtime; a native AOT build has neither.
        Assert.False(File.Exists(Path.Combine(folder, ProxyProcess.Daemon + ".dll")), $"{folder} holds proxyplanes.dll: a JIT publish, not native AOT");
        Assert.False(File.Exists(Path.Combine(folder, ProxyProcess.Daemon + ".runtimeconfig.json")), $"{folder} holds a runtimeconfig: a JIT publish, not native AOT");

        // It runs: its command line parses and rejects a bad flag with the same one line as the JIT build.
        var help = await RunInNamespaceAsync(["run", "--help"]);
        Assert.True(help.ExitCode == 0, help.StandardError);
        Assert.Contains("--mode", help.StandardOutput);
        var bad = await RunInNamespaceAsync(["run", "--mode=bogus", "--manifests=/"]);
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("--mode: 'bogus' is not a mode", bad.StandardError);
    }
}

/// <summary>Runs only when scripts/test.sh (or the caller) has published the daemon and named it in <c>PROXYPLANES_DAEMON_DIR</c>.</summary>
public sealed class PublishedDaemonFactAttribute : FactAttribute
{
    public PublishedDaemonFactAttribute()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(ProxyProcess.DaemonDirectoryVariable)))
            Skip = $"{ProxyProcess.DaemonDirectoryVariable} is not set: scripts/test.sh publishes the daemon (native AOT) and sets it";
    }
}
