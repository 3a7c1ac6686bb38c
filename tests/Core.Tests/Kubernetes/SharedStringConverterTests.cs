using System.Text.Json;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Kubernetes;

/// <summary>
/// Values that thousands of objects repeat are read as one shared string (issue 13), and read exactly as before.
/// </summary>
public class SharedStringConverterTests
{
    private static EndpointSlice Slice(string json) => JsonSerializer.Deserialize(json, KubernetesJsonContext.Default.EndpointSlice)!;

    private static string SliceJson(string name, string address, string node, string zone) =>
        $$$"""
        {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","addressType":"IPv4",
         "metadata":{"name":"{{{name}}}","namespace":"shared-ns","labels":{"kubernetes.io/service-name":"web"}},
         "ports":[{"name":"http","protocol":"TCP","port":8080}],
         "endpoints":[{"addresses":["{{{address}}}"],"nodeName":"{{{node}}}","zone":"{{{zone}}}","hints":{"forZones":[{"name":"{{{zone}}}"}]}}]}
        """;

    [Fact]
    public void Deserialize_RepeatedValuesInTwoObjects_OneStringEach()
    {
        var a = Slice(SliceJson("web-1", "10.0.0.1", "worker-shared-1", "zone-shared-a"));
        var b = Slice(SliceJson("web-2", "10.0.0.2", "worker-shared-1", "zone-shared-a"));

        Assert.Same(a.Endpoints![0].NodeName, b.Endpoints![0].NodeName);
        Assert.Same(a.Endpoints[0].Zone, b.Endpoints[0].Zone);
        Assert.Same(a.Endpoints[0].Zone, b.Endpoints[0].Hints!.ForZones![0].Name);
        Assert.Same(a.Metadata!.Namespace, b.Metadata!.Namespace);
        Assert.Same(a.Ports![0].Protocol, b.Ports![0].Protocol);
        Assert.Same(a.Ports[0].Name, b.Ports[0].Name);
        Assert.Same(a.AddressType, b.AddressType);
        Assert.Equal("worker-shared-1", b.Endpoints[0].NodeName);
        Assert.Equal("zone-shared-a", b.Endpoints[0].Zone);
        Assert.Equal("shared-ns", b.Metadata.Namespace);
        // Values that do not repeat stay the object's own.
        Assert.Equal(["10.0.0.2"], b.Endpoints[0].Addresses!);
        Assert.Equal("web-2", b.Metadata.Name);
    }

    [Fact]
    public void Deserialize_DifferentValues_ReadAsWritten()
    {
        var a = Slice(SliceJson("web-1", "10.0.0.1", "worker-own-1", "zone-own-a"));
        var b = Slice(SliceJson("web-2", "10.0.0.2", "worker-own-2", "zone-own-b"));

        Assert.Equal("worker-own-1", a.Endpoints![0].NodeName);
        Assert.Equal("worker-own-2", b.Endpoints![0].NodeName);
        Assert.Equal("zone-own-a", a.Endpoints[0].Zone);
        Assert.Equal("zone-own-b", b.Endpoints[0].Zone);
    }

    [Fact]
    public void Deserialize_EscapedLongAndNullValues_ReadAsTheDefaultConverterReadsThem()
    {
        var longName = new string('n', 100);
        var slice = Slice($$"""{"addressType":"IPv4","endpoints":[{"nodeName":"node\u002d1","zone":"{{longName}}"},{"nodeName":null}]}""");

        Assert.Equal("node-1", slice.Endpoints![0].NodeName);
        Assert.Equal(longName, slice.Endpoints[0].Zone);
        Assert.Null(slice.Endpoints[1].NodeName);
        Assert.Null(slice.Endpoints[1].Zone);
    }

    [Fact]
    public void Deserialize_NumberWhereAStringBelongs_Throws()
    {
        Assert.Throws<JsonException>(() => Slice("""{"addressType":"IPv4","endpoints":[{"nodeName":7}]}"""));
    }
}
