using ProxyPlanes.Model;
using ProxyPlanes.Sources.Manifests;

namespace ProxyPlanes.Core.Tests.Sources;

public class ManifestParserErrorTests
{
    private static ManifestException ParseError(string text, string file) =>
        Assert.Throws<ManifestException>(() => ManifestParser.Parse(text, file));

    [Fact]
    public void Parse_BadIndentation_ReportsFileLineAndColumn()
    {
        var e = ParseError("""
            apiVersion: v1
            kind: Service
            metadata:
              name: web
             namespace: shop
            """, "bad.yaml");

        Assert.Equal(("bad.yaml", 5, 2), (e.File, e.Line, e.Column));
        Assert.StartsWith("bad.yaml:5:2: ", e.Message);
    }

    [Fact]
    public void Parse_UnterminatedQuote_ReportsFileLineAndColumn()
    {
        var e = ParseError("apiVersion: v1\nkind: Service\nmetadata:\n  name: \"web\n", "quote.yaml");

        Assert.Equal(("quote.yaml", 4, 9), (e.File, e.Line, e.Column));
        Assert.Equal("quote.yaml:4:9: while scanning a quoted scalar, found unexpected end of stream", e.Message);
    }

    [Fact]
    public void Parse_UnclosedFlowSequence_ReportsWhereItOpens()
    {
        var e = ParseError("""
            apiVersion: v1
            kind: Service
            metadata:
              name: web
            spec:
              clusterIPs: [10.96.0.1, 10.96.0.2
              type: ClusterIP
            """, "flow.yaml");

        Assert.Equal("flow.yaml:6:15: '[' is not closed", e.Message);
    }

    [Fact]
    public void Parse_PortNotANumber_ReportsLineOfThePort()
    {
        var e = ParseError("""
            apiVersion: v1
            kind: Service
            metadata:
              name: web
              namespace: shop
            spec:
              ports:
              - name: http
                port: 80
              - name: https
                port: abc
                targetPort: 8443
            """, "svc.yaml");

        Assert.Equal(("svc.yaml", 11, null), (e.File, e.Line, e.Column));
        Assert.Equal("Service shop/web", e.Subject);
        Assert.Equal("svc.yaml:11: Service shop/web: spec.ports[1].port: expected an integer, got \"abc\"", e.Message);
    }

    [Fact]
    public void Parse_UnquotedNumberInLabel_ReportsLineAndSuggestsQuoting()
    {
        var e = ParseError("""
            apiVersion: v1
            kind: Node
            metadata:
              name: node-a
              labels:
                kubernetes.io/hostname: node-a
                rack: 12
            """, "node.yaml");

        Assert.Equal("node.yaml:7: Node node-a: metadata.labels.rack: expected a string (quote it), got 12", e.Message);
    }

    [Fact]
    public void Parse_TypeErrorInsideList_ReportsLineInTheFile()
    {
        var e = ParseError("""
            apiVersion: v1
            kind: List
            items:
            - apiVersion: v1
              kind: Node
              metadata:
                name: node-a
            - apiVersion: discovery.k8s.io/v1
              kind: EndpointSlice
              metadata:
                name: web-1
                labels:
                  kubernetes.io/service-name: web
              endpoints:
              - addresses: [10.0.0.1]
                conditions:
                  ready: yes-ish
            """, "list.yaml");

        Assert.Equal(17, e.Line);
        Assert.Equal("list.yaml:17: EndpointSlice default/web-1: endpoints[0].conditions.ready: expected true or false, got \"yes-ish\"", e.Message);
    }

    [Fact]
    public void Parse_JsonTypeError_ReportsLineOfTheProperty()
    {
        var e = ParseError("""
            {
              "apiVersion": "v1",
              "kind": "Service",
              "metadata": {"name": "web", "namespace": "shop"},
              "spec": {
                "ports": [
                  {"name": "http", "port": "80"}
                ]
              }
            }
            """, "svc.json");

        Assert.Equal("svc.json:7: Service shop/web: spec.ports[0].port: expected an integer, got \"80\"", e.Message);
    }

    [Fact]
    public void Parse_JsonSyntaxError_ReportsFileLineAndColumn()
    {
        var e = ParseError("""
            {
              "apiVersion": "v1",
              "kind": "Service"
              "metadata": {"name": "web"}
            }
            """, "svc.json");

        Assert.Equal(("svc.json", 4, 3), (e.File, e.Line, e.Column));
        Assert.StartsWith("svc.json:4:3: ", e.Message);
    }

    [Fact]
    public void Parse_MissingName_ReportsLineOfMetadata()
    {
        var e = ParseError("""
            apiVersion: v1
            kind: Node
            metadata:
              name: node-a
            ---
            apiVersion: v1
            kind: Service
            metadata:
              namespace: shop
              labels: {app: web}
            spec:
              ports: [{port: 80}]
            """, "noname.yaml");

        Assert.Equal("noname.yaml:8: Service: metadata.name is required", e.Message);
    }

    [Fact]
    public void Parse_MissingMetadata_ReportsDocumentLine()
    {
        var e = ParseError("\n# a node\napiVersion: v1\nkind: Node\n", "nometa.yaml");

        Assert.Equal("nometa.yaml:3: Node: metadata.name is required", e.Message);
    }

    [Fact]
    public void Parse_EndpointSliceWithoutServiceNameLabel_ReportsLineOfLabels()
    {
        var e = ParseError("""
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata:
              name: web-1
              namespace: shop
              labels:
                app: web
            addressType: IPv4
            endpoints: []
            """, "slice.yaml");

        Assert.Equal(6, e.Line);
        Assert.Equal("slice.yaml:6: EndpointSlice shop/web-1: label kubernetes.io/service-name is required (the name of the slice's Service)", e.Message);
    }

    [Fact]
    public void Parse_DuplicateObject_NamesBothPlaces()
    {
        var e = ParseError(Manifests.Docs(Manifests.Service("web"), Manifests.Node("n1"), Manifests.Service("web", port: 81)), "dup.yaml");

        Assert.Equal(("dup.yaml", 25), (e.File, e.Line));
        Assert.Equal("dup.yaml:25: Service shop/web: duplicate object; first defined at dup.yaml:1", e.Message);
    }

    [Fact]
    public void Load_DuplicateAcrossFiles_NamesBothFiles()
    {
        using var dir = new TempDirectory();
        var a = dir.Write("a.yaml", Manifests.Service("web"));
        var b = dir.Write("b.yaml", Manifests.Docs(Manifests.Node("n1"), Manifests.Service("web")));

        var e = Assert.Throws<ManifestException>(() => ManifestParser.Load(dir.Path));

        Assert.Equal((b, 12), (e.File, e.Line));
        Assert.Equal($"{b}:12: Service shop/web: duplicate object; first defined at {a}:1", e.Message);
    }

    [Fact]
    public void Parse_DocumentWithoutKind_ReportsDocumentLine()
    {
        var e = ParseError(Manifests.Node("n1") + "---\napiVersion: v1\nmetadata:\n  name: x\n", "nokind.yaml");

        Assert.Equal("nokind.yaml:12: document has no kind", e.Message);
    }

    [Fact]
    public void Parse_KnownKindWithWrongApiVersion_ReportsLineOfApiVersion()
    {
        var e = ParseError("""
            kind: EndpointSlice
            apiVersion: discovery.k8s.io/v1beta1
            metadata:
              name: web-1
              namespace: shop
            """, "beta.yaml");

        Assert.Equal("beta.yaml:2: EndpointSlice shop/web-1: apiVersion \"discovery.k8s.io/v1beta1\" is not supported; EndpointSlice needs apiVersion discovery.k8s.io/v1", e.Message);
    }

    [Fact]
    public void Parse_KindInWrongCase_IsAnError()
    {
        var e = ParseError("apiVersion: v1\nkind: service\nmetadata:\n  name: web\n", "case.yaml");

        Assert.Equal("case.yaml:2: unknown kind \"service\" (did you mean Service?)", e.Message);
    }

    [Fact]
    public void Parse_PortOutOfRange_ReportsLineOfThePort()
    {
        var e = ParseError("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - name: http\n    port: 70000\n", "range.yaml");

        Assert.Equal("range.yaml:8: Service default/web: spec.ports[0].port: 70000 is not a valid port number (1-65535)", e.Message);
    }

    [Fact]
    public void Parse_DuplicateKey_ReportsBothLines()
    {
        var e = ParseError("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  name: api\n", "key.yaml");

        Assert.Equal("key.yaml:5:3: duplicate key \"name\" (first at line 4)", e.Message);
    }

    [Fact]
    public void Parse_TopLevelList_IsAnError()
    {
        var e = ParseError("- apiVersion: v1\n  kind: Node\n", "seq.yaml");

        Assert.Equal("seq.yaml:1: expected a Kubernetes object (a mapping with apiVersion and kind), found a list", e.Message);
    }
}
