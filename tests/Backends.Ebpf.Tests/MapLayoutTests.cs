using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// The C# mirrors in MapLayout.cs against bpf/proxyplanes.h as a C compiler lays it out: a tiny C
/// program, generated from the mirrors and compiled at test time, prints every struct's size and
/// every field's offset and size.
/// </summary>
public sealed partial class MapLayoutTests
{
    private static readonly Type[] Mirrors =
        [.. typeof(MapLayout).Assembly.GetTypes().Where(t => t.GetCustomAttribute<CStructAttribute>() is not null).OrderBy(t => t.Name, StringComparer.Ordinal)];

    [Fact]
    public void Mirrors_CoverEveryStructOfTheHeader()
    {
        var header = File.ReadAllText(Path.Combine(BpfTestSupport.BpfDirectory, "proxyplanes.h"));
        var inHeader = StructDefinition().Matches(header).Select(m => m.Groups[1].Value).Order(StringComparer.Ordinal).ToArray();
        var mirrored = Mirrors.Select(t => t.GetCustomAttribute<CStructAttribute>()!.Name).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(inHeader, mirrored);
    }

    [Fact]
    public void Mirrors_MatchTheHeader_SizesOffsetsAndFieldSizes()
    {
        var program = new StringBuilder("#include <stdio.h>\n#include <stddef.h>\n#include \"proxyplanes.h\"\nint main(void)\n{\n");
        var expected = new List<string>();
        foreach (var type in Mirrors)
        {
            var c = type.GetCustomAttribute<CStructAttribute>()!.Name;
            program.Append($"\tprintf(\"{c} size %zu\\n\", sizeof(struct {c}));\n");
            expected.Add($"{c} size {Marshal.SizeOf(type)}");
            foreach (var field in type.GetFields(BindingFlags.Public | BindingFlags.Instance).OrderBy(f => f.MetadataToken))
            {
                var cField = SnakeCase(field.Name);
                program.Append($"\tprintf(\"{c}.{cField} offset %zu size %zu\\n\", offsetof(struct {c}, {cField}), sizeof(((struct {c} *)0)->{cField}));\n");
                expected.Add($"{c}.{cField} offset {Marshal.OffsetOf(type, field.Name)} size {Marshal.SizeOf(field.FieldType)}");
            }
        }
        program.Append("\treturn 0;\n}\n");

        var work = Directory.CreateTempSubdirectory("pp-ebpf-layout-");
        try
        {
            var source = Path.Combine(work.FullName, "layout.c");
            var binary = Path.Combine(work.FullName, "layout");
            File.WriteAllText(source, program.ToString());
            var compile = BpfTestSupport.Run("cc", "-Wall", "-Werror", "-I", BpfTestSupport.BpfDirectory, "-o", binary, source);
            Assert.True(compile.ExitCode == 0, $"the header and the C# mirrors disagree on a name:\n{compile.Error}");
            var run = BpfTestSupport.Run(binary);
            Assert.Equal(0, run.ExitCode);
            Assert.Equal(expected, run.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        }
        finally
        {
            work.Delete(recursive: true);
        }
    }

    [Fact]
    public void NetworkOrder_AddressAndPort_AreStoredAsTheKernelSeesThem()
    {
        var key = ServiceKey.For(System.Net.IPAddress.Parse("10.96.0.10"), 80, System.Net.Sockets.ProtocolType.Tcp);
        var bytes = MemoryMarshal.AsBytes(new ReadOnlySpan<ServiceKey>(in key)).ToArray();
        Assert.Equal(new byte[] { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 96, 0, 10, 0, 80, 0, 0, 6, 0, 0, 0 }, bytes);
        Assert.Equal("10.96.0.10:80/Tcp slot 0", key.ToString());

        var key6 = ServiceKey.For(System.Net.IPAddress.Parse("fd00::a"), 80, System.Net.Sockets.ProtocolType.Udp, slot: 2);
        var bytes6 = MemoryMarshal.AsBytes(new ReadOnlySpan<ServiceKey>(in key6)).ToArray();
        Assert.Equal(new byte[] { 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0, 80, 2, 0, 17, 0, 0, 0 }, bytes6);
        Assert.Equal("[fd00::a]:80/Udp slot 2", key6.ToString());
        Assert.False(key6.Address.IsIPv4);
        Assert.True(key.Address.IsIPv4);
        Assert.True(MapAddress.Unspecified(System.Net.Sockets.AddressFamily.InterNetwork).IsUnspecified);
        Assert.False(key.Address.IsUnspecified);
    }

    private static string SnakeCase(string name) => UpperAfterLower().Replace(name, "_$1").ToLowerInvariant();

    [GeneratedRegex("(?<=[a-z0-9])([A-Z])")]
    private static partial Regex UpperAfterLower();

    [GeneratedRegex(@"^struct (pp_\w+) \{", RegexOptions.Multiline)]
    private static partial Regex StructDefinition();
}
