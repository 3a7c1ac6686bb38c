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

/// <summary>Only the annotations the proxy reads are kept from the API (issue 13).</summary>
public class KeptAnnotationsTests
{
    private static ObjectMeta? Metadata(string annotations) => JsonSerializer.Deserialize(
        $$$"""{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"web-1","annotations":{{{annotations}}}}}""",
        KubernetesJsonContext.Default.EndpointSlice)!.Metadata;

    [Fact]
    public void Deserialize_TriggerTimeAmongOthers_OnlyTheTriggerTimeKept()
    {
        var metadata = Metadata("""
            {"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Service\"}",
             "endpoints.kubernetes.io/last-change-trigger-time":"2026-12-07T10:00:00Z","other":null}
            """);

        var annotations = metadata!.Annotations!;
        Assert.Equal("2026-12-07T10:00:00Z", Assert.Single(annotations, a => a.Key == WellKnownLabels.LastChangeTriggerTime).Value);
        Assert.Single(annotations);
        Assert.Equal("web-1", metadata.Name);
    }

    [Fact]
    public void Deserialize_NoKeptAnnotations_Null()
    {
        Assert.Null(Metadata("""{"kubectl.kubernetes.io/last-applied-configuration":"{}","prometheus.io/scrape":"true"}""")!.Annotations);
        Assert.Null(Metadata("{}")!.Annotations);
    }

    [Theory]
    [InlineData("""{"a":1}""")]
    [InlineData("""{"a":{"b":"c"}}""")]
    [InlineData("""["a"]""")]
    public void Deserialize_NotAMapOfStrings_Throws(string annotations)
    {
        Assert.Throws<JsonException>(() => Metadata(annotations));
    }

    [Fact]
    public void Serialize_Annotations_WrittenAsTheyAre()
    {
        var slice = new EndpointSlice { Metadata = new ObjectMeta { Annotations = new() { ["a"] = "1", ["b"] = "2" } } };

        var json = JsonSerializer.Serialize(slice, KubernetesJsonContext.Default.EndpointSlice);

        Assert.Contains("""{"annotations":{"a":"1","b":"2"}}""", json);
    }
}
