using System.Text.Json;

namespace ProxyPlanes.Core.Tests.Util;

/// <summary>The runtime settings the daemon ships with (src/ProxyPlanes/Runtime.props; issue 13).</summary>
public class RuntimeSettingsTests
{
    [Fact]
    public void DaemonRuntimeConfig_GcConservesMemory()
    {
        // The daemon's runtimeconfig is copied beside the tests, as the project references it.
        var path = Path.Combine(AppContext.BaseDirectory, "proxyplanes.runtimeconfig.json");
        using var config = JsonDocument.Parse(File.ReadAllText(path));
        var properties = config.RootElement.GetProperty("runtimeOptions").GetProperty("configProperties");

        Assert.True(properties.TryGetProperty("System.GC.ConserveMemory", out var conserve), $"{path} sets no System.GC.ConserveMemory");
        Assert.Equal(9, conserve.GetInt32());
    }
}
