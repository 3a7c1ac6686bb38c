using System.IO.Compression;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Netlink.Tests;

/// <summary>What the running kernel was built with (/proc/config.gz, else /boot/config-RELEASE).</summary>
public static class KernelConfig
{
    private static readonly Lazy<Dictionary<string, string>?> Options = new(Read);

    /// <summary>True for =y or =m, false for "is not set" or absent; null when the configuration cannot be read.</summary>
    public static bool? Has(string option)
    {
        if (Options.Value is not { } options) return null;
        return options.TryGetValue(option, out var value) && value is "y" or "m";
    }

    private static Dictionary<string, string>? Read()
    {
        string? text = null;
        try
        {
            if (File.Exists("/proc/config.gz"))
            {
                using var gzip = new GZipStream(File.OpenRead("/proc/config.gz"), CompressionMode.Decompress);
                using var reader = new StreamReader(gzip);
                text = reader.ReadToEnd();
            }
            else
            {
                var release = File.ReadAllText("/proc/sys/kernel/osrelease").Trim();
                if (File.Exists($"/boot/config-{release}")) text = File.ReadAllText($"/boot/config-{release}");
            }
        }
        catch (IOException)
        {
            return null;
        }
        if (text is null) return null;
        var options = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            var eq = line.IndexOf('=');
            if (line.StartsWith("CONFIG_", StringComparison.Ordinal) && eq > 0) options[line[..eq]] = line[(eq + 1)..].Trim();
        }
        return options;
    }
}

/// <summary>
/// A throwaway network namespace for one test (named like the sandbox's, so the test script's
/// leftover check covers it), deleted on dispose. Nothing here touches the root namespace.
/// </summary>
public sealed class TestNamespace : IDisposable
{
    public TestNamespace(string suffix)
    {
        Namespace = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-{suffix}");
    }

    public NetworkNamespace Namespace { get; }

    public string Name => Namespace.Name;

    /// <summary>Runs <paramref name="action"/> on a thread inside the namespace (sockets opened there stay there).</summary>
    public T Run<T>(Func<T> action) => Namespace.Run(action);

    /// <summary>Runs a command in the namespace and returns its standard output; fails the test when it fails.</summary>
    public async Task<string> ExecAsync(params string[] args)
    {
        var result = await Namespace.ExecAsync(args);
        Assert.True(result.Succeeded, $"{string.Join(' ', args)} failed ({result.ExitCode}): {result.StandardError}");
        return result.StandardOutput;
    }

    public void Dispose() => Namespace.Dispose();
}
