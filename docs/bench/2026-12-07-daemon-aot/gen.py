import sys
n=int(sys.argv[1]); m=int(sys.argv[2])
out=[]
out.append("apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\nstatus:\n  addresses: [ { type: InternalIP, address: 10.99.0.1 } ]\n")
ep=0
for i in range(n):
    ip=0x0A600000+i+1
    cip="%d.%d.%d.%d"%(ip>>24,(ip>>16)&255,(ip>>8)&255,ip&255)
    out.append(f"apiVersion: v1\nkind: Service\nmetadata: {{ name: svc-{i:06d}, namespace: bench }}\nspec:\n  clusterIP: {cip}\n  ports: [ {{ name: http, port: 80, targetPort: 8080 }} ]\n")
    eps=[]
    for j in range(m):
        e=0x0AF40000+ep; ep+=1
        eps.append('  - { addresses: ["%d.%d.%d.%d"], nodeName: n1 }'%(e>>24,(e>>16)&255,(e>>8)&255,e&255))
    out.append(f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i:06d}-1\n  namespace: bench\n  labels: {{ kubernetes.io/service-name: svc-{i:06d} }}\naddressType: IPv4\nports: [ {{ name: http, protocol: TCP, port: 8080 }} ]\nendpoints:\n"+"\n".join(eps)+"\n")
print("---\n".join(out))
