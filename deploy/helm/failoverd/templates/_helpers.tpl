{{/* ---------------------------------------------------------------- names and labels */}}

{{- define "failoverd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "failoverd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "failoverd.configName" -}}
{{- printf "%s-config" (include "failoverd.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "failoverd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "failoverd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "failoverd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "failoverd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The members' pods: the DaemonSet's selector, the Service's, the NetworkPolicy's, the PDB's. */}}
{{- define "failoverd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "failoverd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: member
{{- end -}}

{{- define "failoverd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Members that run in this cluster (those with a nodeName). */}}
{{- define "failoverd.localMemberCount" -}}
{{- $n := 0 -}}
{{- range .Values.members -}}
{{- if get . "nodeName" -}}{{- $n = add1 $n -}}{{- end -}}
{{- end -}}
{{- $n -}}
{{- end -}}

{{/* ------------------------------------------------------------------------ TOML rendering

failoverd.toml.table  dict "map" M "path" (list of keys; empty: the top level)
  Renders M as TOML: first its scalars and arrays of scalars ("key = value"), then each map as
  a [path.key] table (recursively), then each list of maps as [[path.key]] arrays of tables.
  Keys come in sorted order; a null value is left out.
failoverd.toml.section  dict "map" M "path" P: the "[P]" header, then failoverd.toml.table.
failoverd.toml.value  dict "v" V "at" (list of keys, for error messages): one TOML value.
*/}}

{{- define "failoverd.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "failoverd.toml.path" -}}
{{- $parts := list -}}
{{- range . -}}{{- $parts = append $parts (include "failoverd.toml.key" .) -}}{{- end -}}
{{- join "." $parts -}}
{{- end -}}

{{/* "true" when the value is a non-empty list whose items are all maps (an array of tables). */}}
{{- define "failoverd.toml.isTables" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}
{{- $all := true -}}
{{- range . -}}{{- if not (kindIs "map" .) -}}{{- $all = false -}}{{- end -}}{{- end -}}
{{- $all -}}
{{- else -}}false{{- end -}}
{{- end -}}

{{- define "failoverd.toml.value" -}}
{{- $v := .v -}}
{{- $at := .at -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (float64 (int64 $v)) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v -}}
{{- if $i }}, {{ end -}}
{{- if or (kindIs "map" $e) (kindIs "invalid" $e) -}}
{{- fail (printf "%s[%d]: a list mixes maps or nulls with other values; TOML arrays of values hold no tables (make every item a map for an array of tables)" (include "failoverd.toml.path" $at) $i) -}}
{{- end -}}
{{- include "failoverd.toml.value" (dict "v" $e "at" (append $at (printf "%d" $i))) -}}
{{- end -}}]
{{- else -}}
{{- fail (printf "%s: a value of kind %s cannot be written to TOML" (include "failoverd.toml.path" $at) (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{- define "failoverd.toml.table" -}}
{{- $path := .path -}}
{{- $m := .map -}}
{{- /* "id" and "kind" first, for the reader; then the rest in sorted order */ -}}
{{- $order := list -}}
{{- range $first := list "id" "kind" -}}{{- if hasKey $m $first -}}{{- $order = append $order $first -}}{{- end -}}{{- end -}}
{{- range $k := keys $m | sortAlpha -}}{{- if not (has $k (list "id" "kind")) -}}{{- $order = append $order $k -}}{{- end -}}{{- end -}}
{{- range $k := $order -}}
{{- $v := get $m $k -}}
{{- if not (or (kindIs "invalid" $v) (kindIs "map" $v) (eq (include "failoverd.toml.isTables" $v) "true")) -}}
{{ include "failoverd.toml.key" $k }} = {{ include "failoverd.toml.value" (dict "v" $v "at" (append $path $k)) }}{{ "\n" }}
{{- end -}}
{{- end -}}
{{- range $k, $v := $m -}}
{{- if kindIs "map" $v -}}
{{- include "failoverd.toml.section" (dict "map" $v "path" (append $path $k)) -}}
{{- end -}}
{{- end -}}
{{- range $k, $v := $m -}}
{{- if eq (include "failoverd.toml.isTables" $v) "true" -}}
{{- $sub := append $path $k -}}
{{- range $item := $v -}}
{{ printf "\n[[%s]]\n" (include "failoverd.toml.path" $sub) }}
{{- include "failoverd.toml.table" (dict "map" $item "path" $sub) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "failoverd.toml.section" -}}
{{ printf "\n[%s]\n" (include "failoverd.toml.path" .path) }}
{{- include "failoverd.toml.table" . -}}
{{- end -}}

{{/* ------------------------------------------------------------------------ validation

Refuses values that would make a config failoverd rejects (or a cluster that cannot work), with
a message naming the value. Included by every template, so that `helm template`, `helm lint`
and `helm install` all stop on it.
*/}}
{{- define "failoverd.validate" -}}
{{- $v := .Values -}}

{{- /* members */ -}}
{{- if not (kindIs "slice" $v.members) -}}
{{- fail "members: must be a list of members (id, peerAddress, kind, priority, region, nodeName)" -}}
{{- end -}}
{{- if not $v.members -}}
{{- fail "members: the list is empty; list every member of the cluster (README.md, \"Configuration reference\")" -}}
{{- end -}}
{{- $memberIds := dict -}}
{{- $nodeNames := dict -}}
{{- $producers := 0 -}}
{{- $memberKeys := list "id" "peerAddress" "kind" "priority" "region" "nodeName" -}}
{{- range $i, $m := $v.members -}}
{{- if not (kindIs "map" $m) -}}
{{- fail (printf "members[%d]: must be a map with id, peerAddress, kind, priority, region, nodeName" $i) -}}
{{- end -}}
{{- $id := toString (get $m "id") -}}
{{- range $k, $_ := $m -}}
{{- if not (has $k $memberKeys) -}}
{{- fail (printf "members[%d] (%s): unknown key %q; a member has %s" $i $id $k (join ", " $memberKeys)) -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9._-]{1,63}$" $id) -}}
{{- fail (printf "members[%d]: id %q is not 1 to 63 letters, digits, '-', '_' or '.'" $i $id) -}}
{{- end -}}
{{- if hasKey $memberIds $id -}}
{{- fail (printf "members[%d]: id %q is listed twice; member ids must be unique" $i $id) -}}
{{- end -}}
{{- $_ := set $memberIds $id true -}}
{{- if not (get $m "peerAddress") -}}
{{- fail (printf "members[%d] (%s): peerAddress is missing (host:port the other members dial)" $i $id) -}}
{{- end -}}
{{- $kind := toString (get $m "kind") -}}
{{- if eq $kind "producer" -}}
{{- $producers = add1 $producers -}}
{{- else if ne $kind "witness" -}}
{{- fail (printf "members[%d] (%s): kind %q is neither producer nor witness" $i $id $kind) -}}
{{- end -}}
{{- $node := toString (get $m "nodeName") -}}
{{- if $node -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$" $node) -}}
{{- fail (printf "members[%d] (%s): nodeName %q is not a Kubernetes node name" $i $id $node) -}}
{{- end -}}
{{- if hasKey $nodeNames $node -}}
{{- fail (printf "members[%d] (%s): nodeName %q is also member %s's; one member per node" $i $id $node (get $nodeNames $node)) -}}
{{- end -}}
{{- $_ := set $nodeNames $node $id -}}
{{- end -}}
{{- end -}}
{{- if eq $producers 0 -}}
{{- fail "members: no member has kind producer; at least one must" -}}
{{- end -}}
{{- if not $nodeNames -}}
{{- fail "members: no member has a nodeName, so no pod of this release would find its member file; set nodeName on the members that run in this cluster" -}}
{{- end -}}

{{- /* validators */ -}}
{{- if not (kindIs "slice" $v.validators) -}}
{{- fail "validators: must be a list of validators (id, priorities, chain, producer, failover)" -}}
{{- end -}}
{{- if not $v.validators -}}
{{- fail "validators: the list is empty; list at least one validator (id, chain, producer), as values.yaml does" -}}
{{- end -}}
{{- $validatorIds := dict -}}
{{- $keyIds := dict -}}
{{- $keyFiles := dict -}}
{{- $validatorKeys := list "id" "priorities" "chain" "producer" "failover" -}}
{{- range $i, $val := $v.validators -}}
{{- if not (kindIs "map" $val) -}}
{{- fail (printf "validators[%d]: must be a map with id, chain, producer and optionally priorities, failover" $i) -}}
{{- end -}}
{{- $id := toString (get $val "id") -}}
{{- if not (regexMatch "^[a-z0-9-]{1,40}$" $id) -}}
{{- fail (printf "validators[%d]: id %q is not 1 to 40 lowercase letters, digits or '-'" $i $id) -}}
{{- end -}}
{{- if hasKey $validatorIds $id -}}
{{- fail (printf "validators[%d]: id %q is listed twice; validator ids must be unique" $i $id) -}}
{{- end -}}
{{- $_ := set $validatorIds $id true -}}
{{- range $k, $_ := $val -}}
{{- if not (has $k $validatorKeys) -}}
{{- fail (printf "validators[%d] (%s): unknown key %q; a validator has %s" $i $id $k (join ", " $validatorKeys)) -}}
{{- end -}}
{{- end -}}
{{- range $section := list "chain" "producer" -}}
{{- $s := get $val $section -}}
{{- if not (kindIs "map" $s) -}}
{{- fail (printf "validators[%d] (%s): %s is missing or not a map; producer members need the keys of [%s]" $i $id $section $section) -}}
{{- end -}}
{{- if not (get $s "kind") -}}
{{- fail (printf "validators[%d] (%s): %s.kind is missing" $i $id $section) -}}
{{- end -}}
{{- end -}}
{{- $failover := get $val "failover" -}}
{{- if and (hasKey $val "failover") (not (kindIs "map" $failover)) (not (kindIs "invalid" $failover)) -}}
{{- fail (printf "validators[%d] (%s): failover must be a map of [failover] keys" $i $id) -}}
{{- end -}}
{{- $keyId := toString (default "validator" (get (get $val "producer") "key_id")) -}}
{{- if hasKey $keyIds $keyId -}}
{{- fail (printf "validators[%d] (%s): producer.key_id %q is also validator %s's; every validator needs its own key_id (the default is \"validator\")" $i $id $keyId (get $keyIds $keyId)) -}}
{{- end -}}
{{- $_ := set $keyIds $keyId $id -}}
{{- $keyFile := toString (get (get $val "producer") "key_file") -}}
{{- if $keyFile -}}
{{- if hasKey $keyFiles $keyFile -}}
{{- fail (printf "validators[%d] (%s): producer.key_file %q is also validator %s's; two validators must never sign with one key" $i $id $keyFile (get $keyFiles $keyFile)) -}}
{{- end -}}
{{- $_ := set $keyFiles $keyFile $id -}}
{{- end -}}
{{- $prio := get $val "priorities" -}}
{{- if and (hasKey $val "priorities") (not (kindIs "invalid" $prio)) -}}
{{- if not (kindIs "map" $prio) -}}
{{- fail (printf "validators[%d] (%s): priorities must be a map of member id to priority" $i $id) -}}
{{- end -}}
{{- range $member, $p := $prio -}}
{{- if not (hasKey $memberIds $member) -}}
{{- fail (printf "validators[%d] (%s): priorities names %q, which is not a member id (members: %s)" $i $id $member (join ", " (keys $memberIds | sortAlpha))) -}}
{{- end -}}
{{- if not (or (kindIs "float64" $p) (kindIs "int64" $p) (kindIs "int" $p)) -}}
{{- fail (printf "validators[%d] (%s): priorities.%s must be a whole number, 0 or more" $i $id $member) -}}
{{- end -}}
{{- if or (ne (toString $p) (toString (int64 $p))) (lt (int64 $p) 0) -}}
{{- fail (printf "validators[%d] (%s): priorities.%s must be a whole number, 0 or more, not %v" $i $id $member $p) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* the rest */ -}}
{{- $owned := list "member" "data_dir" "peer_listen" "members" "coordinator" "failover" "api" "metrics" "tls" "validators" "chain" "producer" -}}
{{- range $k, $_ := $v.extraConfig -}}
{{- if has $k $owned -}}
{{- fail (printf "extraConfig.%s: the chart writes %s itself; set it through its own value (coordinator, failover, api, validators, members, ...), not extraConfig" $k $k) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $v.api "socket" -}}
{{- fail "api.socket: the chart sets it to /run/failoverd/control.sock, where the pod's failoverctl looks; leave it out" -}}
{{- end -}}
{{- if not $v.tls.secretName -}}
{{- fail "tls.secretName: name the Secret with ca.pem and each node's <nodeName>.pem/.key (the chart never makes keys)" -}}
{{- end -}}
{{- range $name := list "tls" "validatorKeys" -}}
{{- $secret := toString (get (get $v $name) "secretName") -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$" $secret) -}}
{{- fail (printf "%s.secretName: %q is not a Kubernetes Secret name (lowercase letters, digits, '-', '.')" $name $secret) -}}
{{- end -}}
{{- end -}}
{{- $homeNames := dict -}}
{{- range $i, $h := $v.nodeHomes -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString (get $h "name"))) -}}
{{- fail (printf "nodeHomes[%d]: name %q is not a DNS label (lowercase letters, digits, '-')" $i (get $h "name")) -}}
{{- end -}}
{{- if has (get $h "name") (list "config" "tls" "validator-keys" "data" "run" "tmp") -}}
{{- fail (printf "nodeHomes[%d]: name %q is one of the chart's own volumes; choose another" $i (get $h "name")) -}}
{{- end -}}
{{- if hasKey $homeNames (get $h "name") -}}
{{- fail (printf "nodeHomes[%d]: name %q is used twice" $i (get $h "name")) -}}
{{- end -}}
{{- $_ := set $homeNames (get $h "name") true -}}
{{- $hp := toString (get $h "path") -}}
{{- if or (eq $hp (toString $v.dataDir)) (hasPrefix "/run/failoverd" $hp) (hasPrefix "/etc/failoverd" $hp) (eq $hp "/tmp") -}}
{{- fail (printf "nodeHomes[%d] (%s): path %q is dataDir or a directory the chart mounts itself (/etc/failoverd, /run/failoverd, /tmp)" $i (get $h "name") $hp) -}}
{{- end -}}
{{- if not (regexMatch "^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$" (toString (get $h "path"))) -}}
{{- fail (printf "nodeHomes[%d] (%s): path %q must be absolute, of letters, digits, '.', '_', '-' and '/', without a trailing /" $i (get $h "name") (get $h "path")) -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$" (toString $v.dataDir)) -}}
{{- fail (printf "dataDir: %q must be an absolute path of letters, digits, '.', '_', '-' and '/', without a trailing /" $v.dataDir) -}}
{{- end -}}
{{- if or (hasPrefix "/run/failoverd" (toString $v.dataDir)) (hasPrefix "/etc/failoverd" (toString $v.dataDir)) (eq (toString $v.dataDir) "/tmp") -}}
{{- fail (printf "dataDir: %q is inside a directory the chart mounts itself (/etc/failoverd, /run/failoverd, /tmp)" $v.dataDir) -}}
{{- end -}}
{{- end -}}

{{/* The mounts of failoverd's own state, in check-config and failoverd as in prepare. */}}
{{- define "failoverd.stateMounts" -}}
- name: data
  mountPath: {{ .Values.dataDir }}
{{- range .Values.nodeHomes }}
- name: {{ .name }}
  mountPath: {{ .path }}
{{- end }}
- name: run
  mountPath: /run/failoverd
{{- end -}}

{{/* ------------------------------------------------------------------------ member config

failoverd.memberConfig  dict "root" $ "member" M: the member file of member M.
*/}}
{{- define "failoverd.memberConfig" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $m := .member -}}
{{- $producer := eq (toString (get $m "kind")) "producer" -}}
# Node {{ get $m "nodeName" }}: member {{ get $m "id" }} ({{ get $m "kind" }}). Rendered by the Helm chart
# {{ $root.Chart.Name }}-{{ $root.Chart.Version }}, release {{ $root.Release.Name }}; edit the values, not this file.
member = {{ toJson (toString (get $m "id")) }}
data_dir = {{ toJson (toString $v.dataDir) }}
peer_listen = {{ printf "0.0.0.0:%v" $v.peerPort | toJson }}
{{- $extraScalars := dict -}}
{{- $extraTables := dict -}}
{{- range $k, $x := $v.extraConfig -}}
{{- if or (kindIs "map" $x) (eq (include "failoverd.toml.isTables" $x) "true") -}}
{{- $_ := set $extraTables $k $x -}}
{{- else -}}
{{- $_ := set $extraScalars $k $x -}}
{{- end -}}
{{- end -}}
{{- "\n" -}}
{{- include "failoverd.toml.table" (dict "map" $extraScalars "path" (list)) -}}
{{- range $v.members -}}
{{- $entry := dict "id" (toString (get . "id")) "peer_address" (toString (get . "peerAddress")) "kind" (get . "kind") -}}
{{- if hasKey . "priority" -}}{{- $_ := set $entry "priority" (get . "priority") -}}{{- end -}}
{{- if get . "region" -}}{{- $_ := set $entry "region" (toString (get . "region")) -}}{{- end -}}
{{- printf "\n[[members]]\n" -}}
{{- include "failoverd.toml.table" (dict "map" $entry "path" (list "members")) -}}
{{- end -}}
{{- include "failoverd.toml.section" (dict "map" $v.coordinator "path" (list "coordinator")) -}}
{{- if $v.failover -}}
{{- include "failoverd.toml.section" (dict "map" $v.failover "path" (list "failover")) -}}
{{- end -}}
{{- include "failoverd.toml.section" (dict "map" (merge (dict "socket" "/run/failoverd/control.sock") $v.api) "path" (list "api")) -}}
{{- include "failoverd.toml.section" (dict "map" (dict "enabled" true "listen" (printf "0.0.0.0:%v" $v.metrics.port)) "path" (list "metrics")) -}}
{{- include "failoverd.toml.section" (dict "map" (dict "ca_file" "/run/failoverd/keys/tls/ca.pem" "cert_file" "/run/failoverd/keys/tls/member.pem" "key_file" "/run/failoverd/keys/tls/member.key") "path" (list "tls")) -}}
{{- include "failoverd.toml.table" (dict "map" $extraTables "path" (list)) -}}
{{- range $val := $v.validators -}}
{{- printf "\n[[validators]]\nid = %s\n" (toJson (toString (get $val "id"))) -}}
{{- with get $val "priorities" -}}
{{- include "failoverd.toml.section" (dict "map" . "path" (list "validators" "priorities")) -}}
{{- end -}}
{{- if $producer -}}
{{- include "failoverd.toml.section" (dict "map" (get $val "chain") "path" (list "validators" "chain")) -}}
{{- include "failoverd.toml.section" (dict "map" (get $val "producer") "path" (list "validators" "producer")) -}}
{{- with get $val "failover" -}}
{{- include "failoverd.toml.section" (dict "map" . "path" (list "validators" "failover")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
