using System.Text.Json;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Kubernetes;

/// <summary>What a node keeps per cached API object (issue 13), checked by allocation accounting, not timing.</summary>
public class ApiObjectFootprintTests
{
    [Fact]
    public void Endpoint_WithConditions_IsOneObject()
    {
        _ = new Endpoint { Conditions = new EndpointConditions { Ready = true } }; // JIT and type loading out of the way
        var before = GC.GetAllocatedBytesForCurrentThread();
        var endpoint = new Endpoint { NodeName = "node-a", Conditions = new EndpointConditions { Ready = true, Serving = true, Terminating = false } };
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        GC.KeepAlive(endpoint);
        // The conditions are inline: the endpoint alone, 64 bytes on 64-bit (with a conditions object, 88).
        Assert.True(allocated <= 64, $"an endpoint with conditions took {allocated} bytes");
    }

    [Fact]
    public void Deserialize_Conditions_AbsentIsNullAndEachFlagAsWritten()
    {
        var slice = JsonSerializer.Deserialize(
            """{"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]},{"addresses":["10.0.0.2"],"conditions":{"ready":false,"terminating":true}}]}""",
            KubernetesJsonContext.Default.EndpointSlice)!;

        Assert.Null(slice.Endpoints![0].Conditions);
        var conditions = slice.Endpoints[1].Conditions!.Value;
        Assert.Equal((false, (bool?)null, true), (conditions.Ready, conditions.Serving, conditions.Terminating));
    }
}
